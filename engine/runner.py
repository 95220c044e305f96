"""Run a batch of rows through the model; the LM head runs only at the rows' read positions."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.decoding import Row
from engine.models import DiffusionTransformer
from kernels import SlotOps

__all__ = ["ModelRunner"]


class ModelRunner:
    def __init__(self, model: DiffusionTransformer, *, max_batch_tokens: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.max_batch_tokens = max_batch_tokens
        # Chosen once: a Triton kernel on CUDA where available, else the chunked torch twin.
        # Neither materialises [slots, vocab] logits.
        self.ops = SlotOps.for_device(self.device)

    @torch.inference_mode()
    def run(self, rows: list[Row]) -> list[list[Tensor]]:
        """results[row][read] = log-probs of the read's candidates, normalised over the vocab."""
        results: list[list[Tensor]] = []
        for chunk in self.chunks(rows):
            results.extend(self.run_chunk(chunk))
        return results

    def chunks(self, rows: list[Row]) -> list[list[Row]]:
        """Split rows so that each padded forward stays under the token budget."""
        out: list[list[Row]] = [[]]
        longest = 0
        for row in rows:
            longest_if = max(longest, len(row.ids))
            if out[-1] and longest_if * (len(out[-1]) + 1) > self.max_batch_tokens:
                out.append([])
                longest_if = len(row.ids)
            out[-1].append(row)
            longest = longest_if
        return out

    def run_chunk(self, rows: list[Row]) -> list[list[Tensor]]:
        width = max(len(r.ids) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):  # right padding; the mask hides it from real tokens
            ids[i, : len(row.ids)] = torch.tensor(row.ids)
            mask[i, : len(row.ids)] = 1
        hidden = self.model.trunk(ids.to(self.device), mask.to(self.device))  # [B, T, d]
        batch_index = [i for i, r in enumerate(rows) for _ in r.reads]
        positions = [read.position for r in rows for read in r.reads]
        slots = hidden[batch_index, positions]  # [N, d]: gather before the final norm and head
        candidates = [read.candidates for r in rows for read in r.reads]
        logp = self.score_slots(slots, candidates)
        results, start = [], 0
        for row in rows:
            results.append(logp[start : start + len(row.reads)])
            start += len(row.reads)
        return results

    def score_slots(self, slots: Tensor, candidates: list[Tensor]) -> list[Tensor]:
        """Final norm, then log-probs of each slot's candidates over the whole vocabulary."""
        width = max(len(c) for c in candidates)
        ids = torch.stack(  # [N, K]: pad each row with its own first candidate, sliced off below
            [torch.cat([c, c[:1].expand(width - len(c))]) for c in candidates]
        ).to(self.device)
        normed = self.model.norm(slots)  # [N, d]
        logp = self.ops.slot_logprobs(normed, self.model.head.weight, ids).logprobs().cpu()
        return [logp[i, : len(c)] for i, c in enumerate(candidates)]
