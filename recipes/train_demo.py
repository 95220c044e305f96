"""Training recipe: the demo model, a small LLaDA-family masked-diffusion classifier.

    python -m recipes.train_demo --data DIR --out models/demo [--steps N] [--threads N]

Run `python -m recipes.tokenizer_recipe` first: it writes the tokenizer into `--out`.

Every example is a canvas built by the engine's own code (`engine.taxonomy.compile_taxonomy`,
`engine.canvas.build_template` / `build_canvas`, the default `PromptFormat`), so training
canvases are inference canvases: instruction, taxonomy listing, the document (long
description, truncated at the engine's token budget) and the masked answer slot. Per example
the listed labels are a random subset of the `debian-sections` taxonomy (the gold label plus
k - 1 distractors, in a random order) and the codes are reassigned with a random `code_seed`,
so the model must read the listing to answer. Curriculum: the largest listing grows from 2
labels to all of them over the first 60% of the steps (quadratically, so short listings, which
are cheap and teach the copy, come first); afterwards a growing share of batches (up to 60%)
lists every label, as inference does. Early on, some documents are a label's own name and
description (their share falls to none by mid-training): the easy case of the task, which
teaches finding the matching line and copying its code; real documents start cut short and
grow to the engine's budget. Objective: the masked-diffusion loss on the masked answer slot
(cross-entropy over the whole vocabulary), plus an auxiliary masked-token loss on a random
fraction of the document's tokens (the same objective on the prompt side). The LM
head starts as a copy of the embedding (tied initialisation; the checkpoint is untied, like
LLaDA's), and the tokenizer writes codes bare (`recipes.tokenizer_recipe`), so answering is
copying the token that opens the gold label's line.

Held-out rows are never read (`recipes.split.load_training_data`); model selection (which
checkpoint is written) uses validation only. Seeded and deterministic on CPU for a given
thread count.

Status (issue 11, not done): on a shared 2-core CPU no configuration tried so far has learned
to read the listing within the steps that fit the time budget; validation accuracy stays at
chance (about 1/58) while the answer loss tracks ln(k). Do not ship a model from this recipe
until `python -m recipes.evaluate_demo` shows it clears the issue's bar.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import save_file
from torch import Tensor

from engine.canvas import PromptFormat, build_canvas, build_template
from engine.models import DiffusionTransformer, llada
from engine.taxonomy import compile_taxonomy
from engine.testing.tiny_models import REFERENCE_CONFIGS
from engine.tokenizer import ModelTokenizer, load_tokenizer
from recipes.errors import DatasetError, RecipeError
from recipes.split import load_training_data
from recipes.tokenizer_recipe import EOS_TOKEN, MASK_TOKEN

__all__ = [
    "Example",
    "TrainConfig",
    "llada_config",
    "make_example",
    "save_model",
    "subset_taxonomy",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run; printed and written next to the weights."""

    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    mlp_hidden: int = 384
    steps: int = 2500
    batch: int = 16
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    min_k: int = 2  # smallest listing (gold + one distractor)
    max_k: int = 0  # largest listing; 0: every label of the taxonomy
    ramp: float = 0.6  # fraction of training over which the largest listing grows to all
    full_share: float = 0.6  # share of full listings reached at the end of training
    label_docs: float = 1.0  # share of label-text documents at the start (falls to 0)
    label_docs_until: float = 0.5  # fraction of training after which none are used
    short_docs: int = 64  # real documents are cut to this many tokens at first, growing to
    # the engine's budget over `ramp` (short canvases teach the copy faster)
    aux_weight: float = 0.1  # auxiliary masked-token loss on document tokens
    aux_max_ratio: float = 0.3  # document tokens masked: ratio ~ U(0, this) per example
    eval_every: int = 250
    eval_docs: int = 300  # validation documents scored at each evaluation (model selection)
    seed: int = 0


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    slot: int  # position of the answer slot
    target: int  # token id of the gold label's code
    doc: tuple[int, int]  # [start, end) of the document tokens
    candidates: tuple[int, ...]  # code tokens of the listed labels (gold at `gold`)
    gold: int


def llada_config(
    vocab_size: int, *, eos_id: int, mask_id: int, config: TrainConfig
) -> dict[str, Any]:
    """LLaDA-8B's published config.json with the demo model's dimensions."""
    out = dict(REFERENCE_CONFIGS["llada"])
    out.pop("auto_map", None)  # no remote code: the engine implements the family natively
    out.update(
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.n_heads,
        mlp_hidden_size=config.mlp_hidden,
        vocab_size=vocab_size,
        embedding_size=vocab_size,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        mask_token_id=mask_id,
        max_sequence_length=4096,
        rope_theta=10_000.0,
        precision="fp32",
        torch_dtype="float32",
    )
    return out


def subset_taxonomy(taxonomy: dict[str, Any], indices: Sequence[int]) -> dict[str, Any]:
    """The one-facet taxonomy with only the labels at `indices`, listed in that order."""
    facet = taxonomy["facets"][0]
    labels = [facet["labels"][i] for i in indices]
    return {**taxonomy, "facets": [{**facet, "labels": labels}]}


def make_example(
    taxonomy: dict[str, Any],
    gold: int,
    doc_ids: Sequence[int],
    k: int,
    rng: random.Random,
    tokenizer: ModelTokenizer,
    *,
    eos_id: int,
    mask_id: int,
    prompt: PromptFormat,
) -> Example:
    """A canvas listing the gold label and k - 1 random others in a random order, with codes
    reassigned by a random `code_seed`, built exactly as the engine builds it."""
    n = len(taxonomy["facets"][0]["labels"])
    k = max(1, min(k, n))
    others = rng.sample([i for i in range(n) if i != gold], k - 1)
    order = [gold, *others]
    rng.shuffle(order)
    compiled = compile_taxonomy(
        subset_taxonomy(taxonomy, order),
        tokenizer,
        pad_token_id=eos_id,
        code_seed=rng.randrange(1 << 30),
    )
    facet = compiled.facets[0]
    if facet.slots != 1:
        raise RecipeError("the demo tokenizer must give every section code a single token")
    template = build_template(compiled, tokenizer, mask_token_id=mask_id, read_shift=0,
                              prompt=prompt)
    canvas = build_canvas(template, list(doc_ids))
    slot = canvas.slots[facet.name][0]
    start = len(template.before)
    end = start + min(len(doc_ids), template.budget)
    candidates = tuple(int(t) for t in facet.tokens[:, 0])
    position = order.index(gold)
    return Example(canvas.ids, slot, candidates[position], (start, end), candidates, position)


class _MemoTokenizer(ModelTokenizer):
    """The model's tokenizer with short strings memoised. Compiling a taxonomy with a fresh
    `code_seed` (every example) encodes the whole code pool again; the answers are the same
    ids, only faster."""

    def __init__(self, tokenizer: ModelTokenizer) -> None:
        super().__init__(tokenizer.tokenizer, tokenizer.chat_template, tokenizer.special,
                         tokenizer.fingerprint, tokenizer.label_descriptions)
        self._memo: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if len(text) > 16:
            return super().encode(text)
        ids = self._memo.get(text)
        if ids is None:
            ids = self._memo[text] = super().encode(text)
        return list(ids)


def _init_weights(model: DiffusionTransformer, generator: torch.Generator, n_layers: int) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() < 2:
                continue  # RMSNorm weights stay at one
            std = 0.02
            if name.endswith(("o.weight", "down.weight")):
                std /= math.sqrt(2 * n_layers)  # residual-branch outputs (GPT-2 scaling)
            param.normal_(0.0, std, generator=generator)


def _batch(examples: Sequence[Example], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = True
    return ids, mask


def _listing_size(step: int, config: TrainConfig, n_labels: int, rng: random.Random) -> int:
    """Curriculum: the largest listing grows from min_k to all labels over `ramp` of training;
    afterwards a growing share of batches lists every label (the inference canvas)."""
    frac = step / max(1, config.steps)
    n_labels = min(n_labels, config.max_k or n_labels)
    k_max = config.min_k + (n_labels - config.min_k) * min(1.0, frac / config.ramp) ** 2
    full = config.full_share * max(0.0, (frac - config.ramp) / (1.0 - config.ramp))
    if rng.random() < full:
        return n_labels
    return rng.randint(config.min_k, max(config.min_k, round(k_max)))


def _length_buckets(lengths: Sequence[int], batch: int, rng: random.Random) -> list[list[int]]:
    """A shuffled list of batches of row indices: 32 batches' worth of random rows sorted by
    document length, so a batch's canvases pad to nearly the same width."""
    picks = sorted((rng.randrange(len(lengths)) for _ in range(batch * 32)),
                   key=lambda i: lengths[i])
    batches = [picks[i : i + batch] for i in range(0, len(picks), batch)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def score(
    model: DiffusionTransformer, examples: Sequence[Example], pad_id: int, batch: int = 16
) -> list[int]:
    """Predicted label position (argmax over the listed codes) for each example."""
    was_training = model.training
    model.eval()
    predicted: list[int] = []
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        ids, mask = _batch(chunk, pad_id)
        hidden = model.trunk(ids, mask)
        slots = torch.tensor([e.slot for e in chunk])
        logits = model.logits_from_hidden(hidden[torch.arange(len(chunk)), slots])
        for row, e in zip(logits, chunk, strict=True):
            predicted.append(int(torch.argmax(row[list(e.candidates)])))
    model.train(was_training)
    return predicted


def save_model(
    model: DiffusionTransformer, config: dict[str, Any], out: Path, *, state: dict[str, Tensor]
) -> None:
    """config.json and model.safetensors with LLaDA's reference tensor names."""
    out.mkdir(parents=True, exist_ok=True)
    names = llada.weight_names(model.shape)
    tensors = {ref: state[native].detach().contiguous().clone() for ref, native in names.items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def train(
    data: Path,
    out: Path,
    taxonomy: dict[str, Any],
    config: TrainConfig,
    *,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train on the train split, select on validation, write the model into `out`."""
    console = console or Console()
    started = time.monotonic()
    torch.manual_seed(config.seed)
    tokenizer = _MemoTokenizer(load_tokenizer(out))
    eos_id, mask_id = tokenizer.token_id(EOS_TOKEN), tokenizer.token_id(MASK_TOKEN)
    vocab = tokenizer.tokenizer.get_vocab_size()
    model_config = llada_config(vocab, eos_id=eos_id, mask_id=mask_id, config=config)
    shape = llada.shape_from_config(model_config)
    model = DiffusionTransformer(shape)
    _init_weights(model, torch.Generator().manual_seed(config.seed), config.n_layers)
    with torch.no_grad():  # tied initialisation (the checkpoint stays untied, as LLaDA's)
        model.head.weight.copy_(model.embed.weight)
    model.train()

    train_rows, val_rows = load_training_data(data)
    labels = [label["id"] for label in taxonomy["facets"][0]["labels"]]
    index = {label: i for i, label in enumerate(labels)}
    train_rows = [r for r in train_rows if r.section in index]
    if not train_rows:
        raise DatasetError("no train row has a section of the taxonomy")
    val_rows = sorted((r for r in val_rows if r.section in index), key=lambda r: r.name)
    val_rows = random.Random(config.seed).sample(val_rows, min(config.eval_docs, len(val_rows)))
    encode = tokenizer.tokenizer.encode_batch
    train_ids = [e.ids for e in encode([r.text for r in train_rows], add_special_tokens=False)]
    val_ids = [e.ids for e in encode([r.text for r in val_rows], add_special_tokens=False)]
    prompt = PromptFormat()  # the engine's defaults: what inference builds
    # Warm-up documents: a label's own name and description. Finding the listed line whose
    # words the document repeats and copying its code is the easy case of the task; it teaches
    # the copy before the semantics of real descriptions (their share falls to zero).
    label_ids = [
        tokenizer.encode(f"{label.get('name') or label['id']}. {label.get('description') or ''}")
        for label in taxonomy["facets"][0]["labels"]
    ]
    n_labels = len(labels)
    make = dict(tokenizer=tokenizer, eos_id=eos_id, mask_id=mask_id, prompt=prompt)
    # Validation canvases: every label in the taxonomy's order, the taxonomy's own codes.
    full = compile_taxonomy(taxonomy, tokenizer, pad_token_id=eos_id)
    template = build_template(full, tokenizer, mask_token_id=mask_id, read_shift=0, prompt=prompt)
    codes = tuple(int(t) for t in full.facets[0].tokens[:, 0])
    val_examples = []
    for row, ids in zip(val_rows, val_ids, strict=True):
        canvas = build_canvas(template, ids)
        gold = index[row.section]
        val_examples.append(Example(canvas.ids, canvas.slots["section"][0], codes[gold],
                                    (0, 0), codes, gold))

    params_decay = [p for p in model.parameters() if p.dim() >= 2]
    params_plain = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": params_decay, "weight_decay": config.weight_decay},
         {"params": params_plain, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-8,
    )

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    rng = random.Random(config.seed)
    noise = torch.Generator().manual_seed(config.seed + 1)
    log: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Tensor] | None] = (-1.0, -1, None)
    console.print(f"[bold]demo model[/bold] {sum(p.numel() for p in model.parameters()):,} "
                  f"parameters, {len(train_rows)} train documents, {n_labels} sections")
    console.print(json.dumps(asdict(config)))
    running = slot_running = 0.0
    lengths = [min(len(ids), prompt.document_token_budget) for ids in train_ids]
    queue: list[list[int]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("training", total=config.steps, info="")
        for step in range(config.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            k = _listing_size(step, config, n_labels, rng)
            if not queue:
                queue = _length_buckets(lengths, config.batch, rng)
            picks = queue.pop()
            share = config.label_docs * max(0.0, 1.0 - step / (config.label_docs_until
                                                               * config.steps))
            budget = prompt.document_token_budget
            cap = round(config.short_docs + (budget - config.short_docs)
                        * min(1.0, step / (config.ramp * config.steps)))
            examples = []
            for p in picks:
                gold = index[train_rows[p].section]
                doc = label_ids[gold] if rng.random() < share else train_ids[p][:cap]
                examples.append(make_example(taxonomy, gold, doc, k, rng, **make))
            ids, mask = _batch(examples, eos_id)
            noisy = ids.clone()
            masked = torch.zeros_like(mask)
            if config.aux_weight > 0:
                ratio = torch.rand((len(examples), 1), generator=noise) * config.aux_max_ratio
                draw = torch.rand(ids.shape, generator=noise) < ratio
                for i, e in enumerate(examples):
                    masked[i, e.doc[0] : e.doc[1]] = draw[i, e.doc[0] : e.doc[1]]
                noisy[masked] = mask_id
            slots = torch.tensor([e.slot for e in examples])
            targets = torch.tensor([e.target for e in examples])
            noisy[torch.arange(len(examples)), slots] = mask_id  # already masked; explicit
            hidden = model.trunk(noisy, mask)
            slot_logits = model.logits_from_hidden(hidden[torch.arange(len(examples)), slots])
            loss = F.cross_entropy(slot_logits, targets)
            slot_value = float(loss.detach())
            if masked.any():
                doc_logits = model.logits_from_hidden(hidden[masked])
                loss = loss + config.aux_weight * F.cross_entropy(doc_logits, ids[masked])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            value = float(loss.detach())
            running = 0.98 * running + 0.02 * value if step else value
            slot_running = 0.98 * slot_running + 0.02 * slot_value if step else slot_value
            progress.update(task, advance=1, info=f"k={k:2d} loss={running:.3f} "
                            f"answer={slot_running:.3f}")
            if (step + 1) % 50 == 0:
                progress.console.print(f"step {step + 1}: k={k} loss {running:.3f} (answer "
                                       f"{slot_running:.3f})")
            last = step + 1 == config.steps
            if (step + 1) % config.eval_every == 0 or last:
                predicted = score(model, val_examples, eos_id)
                acc = sum(p == e.gold for p, e in zip(predicted, val_examples, strict=True))
                acc /= len(val_examples)
                entry = {"step": step + 1, "loss": round(running, 4),
                         "answer_loss": round(slot_running, 4), "val_accuracy": acc,
                         "seconds": round(time.monotonic() - started, 1)}
                log.append(entry)
                progress.console.print(f"step {step + 1}: loss {running:.3f} (answer "
                                       f"{slot_running:.3f}), validation "
                                       f"accuracy {acc:.3f} ({len(val_examples)} documents)")
                if acc > best[0]:  # written at once, so an interrupted run leaves the best
                    best = (acc, step + 1, copy.deepcopy(model.state_dict()))
                    save_model(model, model_config, out, state=best[2])
    seconds = time.monotonic() - started
    summary = {
        "config": asdict(config),
        "selected_step": best[1],
        "selected_val_accuracy": best[0],
        "log": log,
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    console.print(f"selected step {best[1]} (validation accuracy {best[0]:.3f} on "
                  f"{len(val_examples)} documents); wall time {seconds / 60:.1f} min")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.train_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset dir written by fetch")
    parser.add_argument("--out", type=Path, required=True,
                        help="model directory (holds the tokenizer; gets the weights)")
    parser.add_argument("--taxonomies", type=Path, default=Path("models/taxonomies"))
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        taxonomy = json.loads((args.taxonomies / "debian-sections.json").read_text("utf-8"))
        config = TrainConfig(steps=args.steps, seed=args.seed)
        train(args.data, args.out, taxonomy, config)
    except (RecipeError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
