"""Run a batch of rows through the model; the LM head runs only at the rows' read positions."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.decoding import Row
from engine.models import DiffusionTransformer

__all__ = ["ModelRunner"]


class ModelRunner:
    def __init__(self, model: DiffusionTransformer, *, max_batch_tokens: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.max_batch_tokens = max_batch_tokens

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
        logits = self.model.logits_from_hidden(slots).float()  # [N, V]
        lse = torch.logsumexp(logits, dim=-1)  # [N]
        return [
            (logits[i, c.to(self.device)] - lse[i]).cpu() for i, c in enumerate(candidates)
        ]
