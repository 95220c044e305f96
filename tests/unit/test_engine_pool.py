"""EnginePool over fake engine clients: routing by load and affinity, failures, settings.

The pool's real-process behaviour (two `tacet engine` processes behind `tacet serve`, one of
them SIGKILLed) is in tests/integration/test_engine_pool_serve.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.protocol import DecodeOut, DocumentDone, HealthReport, Isolation, LabelOut, Welcome
from gateway.engine_client import (
    ConnectedEngine,
    EngineBusy,
    EngineUnavailable,
    SupervisedEngine,
)
from gateway.engine_pool import EnginePool, affinity_key, build_engines, estimated_tokens
from gateway.settings import EngineSettings, SettingsError
from gateway.telemetry import Telemetry

TAXONOMY = {"name": "subjects", "version": "1", "facets": [{"name": "t", "labels": []}]}


class FakeEngine:
    """Answers after `delay` seconds, or waits for `release`; can be made to die or be full."""

    def __init__(self, pid: int, *, model: str = "m", delay: float = 0.0) -> None:
        self.ready = True
        self.welcome: Welcome | None = Welcome(1, pid, model, "llada", "torch",
                                               Isolation(True, True, True, "-"))
        self.restarts = 0
        self.delay = delay
        self.calls: list[list[str]] = []
        self.busy = False
        self.hold: asyncio.Event | None = None
        self._pending: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.ready = False

    async def health(self, timeout: float = 10.0) -> HealthReport:
        return HealthReport(True, 0, len(self.calls), sum(map(len, self.calls)))

    def die(self) -> None:
        """Like a SIGKILLed engine: not ready, every call in flight fails at once."""
        self.ready = False
        self.welcome = None
        for future in self._pending:
            if not future.done():
                future.set_exception(EngineUnavailable("engine is unavailable"))

    async def classify(self, taxonomy: dict[str, Any], texts: list[str], *, on_document: Any = None,
                       mode: str = "diffusion", threshold: float | None = None) -> list[Any]:
        if not self.ready:
            raise EngineUnavailable("engine is not ready")
        if self.busy:
            raise EngineBusy("engine queue is full")
        self.calls.append(list(texts))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        if self.hold is not None:
            waiting = asyncio.ensure_future(self.hold.wait())
            await asyncio.wait({waiting, future}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        else:
            await asyncio.wait({future}, timeout=self.delay)
        if future.done() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
        future.cancel()
        decode = DecodeOut(mode, 1, True, False, 3)
        done = [DocumentDone("c", i, [LabelOut("t", "x", 1.0)], {}, decode)
                for i in range(len(texts))]
        for item in done:
            if on_document is not None:
                on_document(item)
        return done


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError):
        EnginePool([])


def test_ready_while_one_engine_is_ready() -> None:
    a, b = FakeEngine(1), FakeEngine(2)
    pool = EnginePool([a, b])
    assert pool.ready and pool.ready_count == 2 and pool.configured == 2
    a.die()
    assert pool.ready and pool.ready_count == 1
    assert pool.welcome is not None and pool.welcome.pid == 2
    b.die()
    assert not pool.ready and pool.ready_count == 0

    async def call() -> None:
        await pool.classify(TAXONOMY, ["x"])

    with pytest.raises(EngineUnavailable):
        run(call())


def test_concurrent_calls_spread_evenly_over_equal_engines() -> None:
    engines = [FakeEngine(1, delay=0.02), FakeEngine(2, delay=0.02)]
    pool = EnginePool(engines)

    async def load() -> None:
        async def client(n: int) -> None:
            for i in range(20):
                await pool.classify(TAXONOMY, [f"document {n} {i}"] * 4)

        await asyncio.gather(*(client(n) for n in range(6)))

    run(load())
    first, second = pool.routed_documents
    assert first + second == 6 * 20 * 4
    assert abs(first - second) <= 0.2 * max(first, second), (first, second)


def test_a_lone_caller_stays_on_the_taxonomys_home_engine() -> None:
    """Light load: every call of one taxonomy goes to one engine (its prefix cache stays warm);
    another taxonomy version may have another home; both are stable."""
    engines = [FakeEngine(i) for i in range(4)]
    pool = EnginePool(engines)

    async def calls(taxonomy: dict[str, Any]) -> list[int]:
        for _ in range(8):
            await pool.classify(taxonomy, ["short text"])
        return [len(e.calls) for e in engines]

    counts = run(calls(TAXONOMY))
    assert sorted(counts) == [0, 0, 0, 8]
    homes = set()
    for version in range(12):
        doc = {**TAXONOMY, "version": str(version)}
        order = pool.order(affinity_key(doc), 1)
        homes.add(order[0])
    assert len(homes) > 1  # keys are spread over the engines


def test_affinity_yields_to_load() -> None:
    """A home engine more than one call's size ahead of the least loaded gets no more calls."""
    engines = [FakeEngine(1), FakeEngine(2)]
    pool = EnginePool(engines)
    key = affinity_key(TAXONOMY)
    home = pool.order(key, 10)[0]
    other = 1 - home
    for engine in engines:
        engine.hold = asyncio.Event()

    async def scenario() -> None:
        first = asyncio.ensure_future(pool.classify(TAXONOMY, ["a" * 400]))  # ~100 tokens
        await asyncio.sleep(0.01)
        assert len(engines[home].calls) == 1
        second = asyncio.ensure_future(pool.classify(TAXONOMY, ["b" * 40]))  # ~10 tokens
        await asyncio.sleep(0.01)
        assert len(engines[other].calls) == 1  # the home was 100 tokens ahead
        for engine in engines:
            assert engine.hold is not None
            engine.hold.set()
        await asyncio.gather(first, second)

    run(scenario())


def test_a_dying_engine_fails_only_its_own_calls() -> None:
    engines = [FakeEngine(1), FakeEngine(2)]
    for engine in engines:
        engine.hold = asyncio.Event()
    pool = EnginePool(engines)

    async def scenario() -> None:
        calls = [asyncio.ensure_future(pool.classify(TAXONOMY, [f"t{i}"])) for i in range(6)]
        await asyncio.sleep(0.02)
        on_first = len(engines[0].calls)
        assert on_first and len(engines[1].calls)
        engines[0].die()
        assert engines[1].hold is not None
        engines[1].hold.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == on_first
        assert all(isinstance(r, EngineUnavailable) for r in failed)
        # New calls go to the survivor.
        assert len(await pool.classify(TAXONOMY, ["after"])) == 1
        assert engines[1].calls[-1] == ["after"]

    run(scenario())


def test_a_full_engine_passes_the_call_on_and_all_full_is_busy() -> None:
    engines = [FakeEngine(1), FakeEngine(2)]
    pool = EnginePool(engines)
    home = pool.order(affinity_key(TAXONOMY), 1)[0]
    engines[home].busy = True
    assert len(run(pool.classify(TAXONOMY, ["x"]))) == 1
    assert engines[1 - home].calls == [["x"]]
    engines[1 - home].busy = True
    with pytest.raises(EngineBusy):
        run(pool.classify(TAXONOMY, ["y"]))


def test_streamed_results_reach_the_caller_and_free_the_load() -> None:
    pool = EnginePool([FakeEngine(1), FakeEngine(2)])
    seen: list[int] = []
    run(pool.classify(TAXONOMY, ["a", "b", "c"], on_document=lambda d: seen.append(d.index)))
    assert sorted(seen) == [0, 1, 2]
    assert pool.outstanding_tokens == [0, 0]


def test_an_engine_with_another_model_gets_no_calls() -> None:
    engines = [FakeEngine(1, model="a"), FakeEngine(2, model="a"), FakeEngine(3, model="b")]
    pool = EnginePool(engines)
    assert pool.ready_count == 2
    for i in range(10):
        run(pool.classify({**TAXONOMY, "version": str(i)}, ["x"]))
    assert engines[2].calls == []


def test_health_sums_the_ready_engines() -> None:
    engines = [FakeEngine(1), FakeEngine(2)]
    pool = EnginePool(engines)
    run(pool.classify(TAXONOMY, ["a", "b"]))
    run(pool.classify({**TAXONOMY, "version": "9"}, ["c"]))
    assert run(pool.health()).document_passes == 3


def test_metrics_show_engines_ready_out_of_configured() -> None:
    engines = [FakeEngine(1), FakeEngine(2)]
    telemetry = Telemetry()
    telemetry.watch(telemetry.metered(EnginePool(engines)))  # type: ignore[arg-type]
    engines[1].die()
    text = telemetry.prometheus_text().decode()
    assert "tacet_engines_ready 1.0" in text
    assert "tacet_engines_configured 2.0" in text
    single = Telemetry()
    single.watch(FakeEngine(3))
    text = single.prometheus_text().decode()
    assert "tacet_engines_ready 1.0" in text and "tacet_engines_configured 1.0" in text
    telemetry.shutdown()
    single.shutdown()


def test_estimates_and_keys() -> None:
    assert estimated_tokens("") == 1
    assert estimated_tokens("a" * 400) == 101
    other = {**TAXONOMY, "facets": [{"name": "u", "labels": []}]}
    assert affinity_key(TAXONOMY).startswith("subjects@1#")
    assert affinity_key(TAXONOMY) != affinity_key(other)  # same name@version, other content


# ---- settings -> clients ----


def test_engine_sockets_setting(tmp_path: Path) -> None:
    sockets = "/run/tacet-engine-0/engine.sock, /run/tacet-engine-1/engine.sock"
    env = {"TACET_ENGINE_SOCKETS": sockets}
    settings = EngineSettings.from_env(env)
    settings.validate(dev=False)
    assert settings.socket_paths() == (
        Path("/run/tacet-engine-0/engine.sock"), Path("/run/tacet-engine-1/engine.sock")
    )
    pool = build_engines(settings, None)
    assert isinstance(pool, EnginePool) and pool.configured == 2
    assert all(isinstance(e, ConnectedEngine) for e in pool.engines)
    single = build_engines(EngineSettings.from_env({"TACET_ENGINE_SOCKET": "/run/e.sock"}), None)
    assert isinstance(single, ConnectedEngine)  # one engine: the client as before, no pool


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TACET_ENGINE_SOCKETS": "/a.sock,/a.sock"}, "twice"),
        ({"TACET_ENGINE_SOCKETS": "/a.sock,b.sock"}, "absolute"),
        ({"TACET_ENGINE_SOCKETS": "/a.sock", "TACET_ENGINE_SOCKET": "/b.sock"}, "both given"),
        ({"TACET_ENGINE_SOCKETS": "/a.sock", "TACET_ENGINES": "2"}, "sockets listed"),
        ({"TACET_ENGINES": "0"}, "between 1 and"),
        ({"TACET_ENGINES": "2", "TACET_DEVICE": "cuda:1"}, "TACET_DEVICE=cuda"),
        ({"TACET_ENGINES": "two"}, "integer"),
    ],
)
def test_engine_settings_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        EngineSettings.from_env(env).validate(dev=True)


def test_spawned_engines_get_a_socket_and_a_share_each(tmp_path: Path) -> None:
    settings = EngineSettings(model_dir=tmp_path, engines=2)
    pool = build_engines(settings, tmp_path / "run")
    assert isinstance(pool, EnginePool)
    engines = pool.engines
    assert all(isinstance(e, SupervisedEngine) for e in engines)
    paths = {e.socket_path for e in engines}  # type: ignore[attr-defined]
    assert len(paths) == 2
    assert all("OMP_NUM_THREADS" in e.extra_env for e in engines)  # type: ignore[attr-defined]
    gpu = build_engines(EngineSettings(model_dir=tmp_path, engines=2, device="cuda"), tmp_path)
    assert [e.extra_env["CUDA_VISIBLE_DEVICES"] for e in gpu.engines] == ["0", "1"]  # type: ignore[attr-defined]
    one = build_engines(EngineSettings(model_dir=tmp_path), tmp_path / "one")
    assert isinstance(one, SupervisedEngine) and one.extra_env == {}


# ---- tacet zdr report: the engines section ----


def _bound(folder: Path, mode: int = 0o600, folder_mode: int = 0o700) -> tuple[Path, Any]:
    import socket as socket_module

    folder.mkdir(parents=True)
    folder.chmod(folder_mode)
    path = folder / "engine.sock"
    sock = socket_module.socket(socket_module.AF_UNIX)
    sock.bind(str(path))
    path.chmod(mode)
    return path, sock


def test_zdr_report_lists_each_engine_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import tempfile

    from compliance.host import Verdict
    from gateway._zdr_config import config_checks

    root = Path(tempfile.mkdtemp(prefix="tacet-z-"))
    try:
        good, s1 = _bound(root / "e0")
        open_folder, s2 = _bound(root / "e1", folder_mode=0o755)
        missing = root / "e2" / "engine.sock"
        env = {"TACET_ENGINE_SOCKETS": f"{good},{open_folder},{missing}"}
        checks = {c.name: c for c in config_checks("engines", env)}
        assert checks["engines.count"].verdict is Verdict.OK
        assert "3 engine unit(s)" in checks["engines.count"].reason
        assert checks["engines.0"].verdict is Verdict.OK and str(good) in checks["engines.0"].reason
        assert checks["engines.1"].verdict is Verdict.UNSAFE
        assert checks["engines.2"].verdict is Verdict.UNKNOWN
        s1.close()
        s2.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    spawned = {c.name: c for c in config_checks("engines", {"TACET_ENGINES": "4"})}
    assert "4 engine processes" in spawned["engines.count"].reason
    refused = config_checks("engines", {"TACET_ENGINES": "0"})
    assert [c.name for c in refused] == ["engines.settings"]


def test_zdr_report_fails_on_an_engine_socket_others_can_reach(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil
    import tempfile

    from gateway.cli import main

    root = Path(tempfile.mkdtemp(prefix="tacet-z-"))
    try:
        path, sock = _bound(root / "e0", mode=0o666)
        monkeypatch.setenv("TACET_ENGINE_SOCKETS", str(path))
        monkeypatch.setenv("TACET_DATA_DIR", str(root / "data"))
        code = main(["zdr", "report", "--json", "--warn-host"])
        report = json.loads(capsys.readouterr().out)
        sock.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (section,) = [s for s in report["sections"] if s["name"] == "engines"]
    assert {c["name"]: c["verdict"] for c in section["checks"]}["engines.0"] == "unsafe"
    assert code == 1


def test_an_engine_without_a_welcome_still_serves() -> None:
    quiet = FakeEngine(1)
    quiet.welcome = None
    pool = EnginePool([quiet, FakeEngine(2, model="a"), FakeEngine(3, model="b")])
    assert pool.ready_count == 2  # the quiet one, and the lower-numbered of two models
    assert pool.welcome is not None and pool.welcome.model_id == "a"


def test_a_restarted_engine_is_no_longer_warm() -> None:
    """Warm keys belong to an engine process: after a restart (another pid) its cache is cold,
    so the key's calls go to the engine still warm for it."""
    engines = [FakeEngine(1), FakeEngine(2)]
    pool = EnginePool(engines)
    key = affinity_key(TAXONOMY)
    home = pool.order(key, 10)[0]
    other = 1 - home

    async def warm_both() -> None:
        engines[home].hold = asyncio.Event()
        first = asyncio.ensure_future(pool.classify(TAXONOMY, ["a" * 400]))
        await asyncio.sleep(0.01)
        await pool.classify(TAXONOMY, ["b" * 400])  # the home is busy: the other one
        engines[home].hold.set()
        await first

    run(warm_both())
    assert engines[other].calls == [["b" * 400]]
    engines[home].hold = None
    engines[home].welcome = Welcome(1, 99, "m", "llada", "torch", Isolation(True, True, True, "-"))
    for _ in range(4):
        assert pool.order(key, 10)[0] == other
