"""Stacked bar charts as plain geometry, drawn by the report template as inline SVG.

Bars are time buckets (x, UTC), stacked by status class (y, records per bucket); every number is
computed here and the template only escapes and places it. No script, no external resource.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from compliance.audit._report_tally import STATUS_CLASSES, Tally

__all__ = ["Chart", "bar_chart", "format_time", "width_label"]

_DAY = 86_400_000
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 10, 12, 40


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    w: float
    h: float
    cls: str
    tip: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    segments: list[Segment]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    x_label: str
    y_label: str
    total: int


def format_time(ms: int | None, *, precise: bool = True) -> str:
    if ms is None:
        return "not recorded"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if precise else "%Y-%m-%d %H:%M")


def width_label(width_ms: int) -> str:
    minutes = width_ms // 60_000
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 1440:
        return f"{minutes // 60} h"
    if minutes % 10080 == 0:
        return f"{minutes // 10080} week{'s' if minutes > 10080 else ''}"
    return f"{minutes // 1440} day{'s' if minutes > 1440 else ''}"


def _nice_step(peak: int, ticks: int = 4) -> int:
    raw = max(1.0, peak / ticks)
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _bucket_label(ms: int, width_ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d" if width_ms >= _DAY else "%m-%d %H:%M")


def bar_chart(tally: Tally, group: str, key: str, title: str, *, width: int, height: int) -> Chart:
    """Records per bucket of `(group, key)`, one stacked bar per bucket from tally.lo to hi."""
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    lo, hi = (tally.lo, tally.hi) if tally.lo is not None and tally.hi is not None else (0, -1)
    count = hi - lo + 1
    per_bucket = [tally.buckets.get((group, key, lo + i), [0] * len(STATUS_CLASSES))
                  for i in range(max(count, 0))]
    peak = max((sum(c) for c in per_bucket), default=0)
    step = _nice_step(peak)
    top = max(step, math.ceil(peak / step) * step)
    slot = plot_w / max(count, 1)
    bar_w = min(max(1.0, slot * 0.8), 40.0)  # a few buckets stay bars, not blocks
    segments: list[Segment] = []
    for i, counts in enumerate(per_bucket):
        start = (lo + i) * tally.width_ms
        base = float(plot_h)
        for cls, n in zip(STATUS_CLASSES, counts, strict=True):
            if n == 0:
                continue
            h = plot_h * n / top
            base -= h
            tip = f"{_bucket_label(start, tally.width_ms)} UTC: {n} {cls}"
            segments.append(Segment(round(_LEFT + i * slot + (slot - bar_w) / 2, 2),
                                    round(_TOP + base, 2), round(bar_w, 2), round(h, 2), cls, tip))
    y_ticks = [Tick(round(_TOP + plot_h - plot_h * v / top, 2), f"{v:,}")
               for v in range(0, top + 1, step)]
    most = max(2, plot_w // 95)  # x labels that fit side by side
    shown = max(1, math.ceil(count / most)) if count > 0 else 1
    x_ticks = [Tick(round(_LEFT + (i + 0.5) * slot, 2),
                    _bucket_label((lo + i) * tally.width_ms, tally.width_ms))
               for i in range(0, max(count, 0), shown)]
    total = sum(sum(c) for c in per_bucket)
    return Chart(title, width, height, _LEFT, _TOP, plot_w, plot_h, segments, x_ticks, y_ticks,
                 "time (UTC, bucket start)", f"records per {width_label(tally.width_ms)}", total)
