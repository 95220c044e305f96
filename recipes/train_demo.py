"""Training recipe: the demo model, a small LLaDA-family masked-diffusion classifier.

    python -m recipes.train_demo --data DIR --out models/demo [--steps N] [--threads N]
                                 [--device cuda]

Run `python -m recipes.tokenizer_recipe` first: it writes the tokenizer into `--out`.

Every example is a canvas built by the engine's own code (`engine.taxonomy.compile_taxonomy`,
`engine.canvas.build_template` / `build_canvas`, the default `PromptFormat`, listings of codes
and names as the tokenizer config asks), so training canvases are inference canvases:
instruction, taxonomy listing, the document (long description) and the masked answer slot.
Per example the listed labels are the `debian-sections` taxonomy (every label by default,
as inference lists them; with `full_share` < 1, a random subset holding the gold label that
grows from `min_k` labels to all of them over the first `ramp` of training) in a random order,
and the codes are reassigned with a random `code_seed`, so the model must read the listing to
answer.

Start (`recipes.demo_init`): position kernels, a count curve and a bag-of-words dual encoder
fitted on the train split, written exactly into the four layers, so that the untrained forward
pass already classifies like the encoder (logged as step 0). The start is fitted on the CPU;
the training steps run on `--device` (a GPU when there is one). Objective: the masked-diffusion
loss on the masked answer slot (cross-entropy over the whole vocabulary) plus an attention
target for the pointer (last layer, head 0: the answer slot attends to the gold label's code).
All weights are trained, with a small learning rate: larger ones (1e-4 and up) pull the start
apart faster than the loss rebuilds it. Only trained checkpoints are candidates for selection.

Held-out rows are never read (`recipes.split.load_training_data`); model selection (which
checkpoint is written) uses validation only. Seeded: short runs repeat bit for bit, but over
hundreds of steps multi-threaded CPU reductions make two runs drift apart (the same losses at
step 100, different at step 200), so a re-run reproduces the figures, not the bytes.
"""

from __future__ import annotations

import argparse
import bisect
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

from engine.canvas import (
    DOCUMENT_HEADER,
    PromptFormat,
    build_canvas,
    build_template,
    listing_text,
)
from engine.models import DiffusionTransformer, llada
from engine.models._transformer import positions_from_mask
from engine.taxonomy import CompiledTaxonomy, _code_pool, compile_taxonomy
from engine.testing.tiny_models import REFERENCE_CONFIGS
from engine.tokenizer import ModelTokenizer, load_tokenizer
from recipes.demo_init import (
    NAME_OFFSETS,
    WordVectors,
    find_region,
    fit_curve,
    fit_kernel,
    label_bags,
    layout_for,
    region_kernel,
    train_word_vectors,
    wire,
)
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

    d_model: int = 320
    n_layers: int = 4
    n_heads: int = 5
    rope_theta: float = 1e16  # most rotary pairs static over a canvas (recipes.demo_init)
    mlp_hidden: int = 64
    steps: int = 400
    batch: int = 32
    lr: float = 3e-5  # small: training refines the wired start, it does not rebuild it
    warmup: int = 10
    weight_decay: float = 0.01
    min_k: int = 8  # smallest listing at the start of the curriculum
    max_k: int = 0  # largest listing; 0: every label of the taxonomy
    ramp: float = 0.3  # fraction of training over which the largest listing grows to all
    full_share: float = 1.0  # share of batches that list every label
    doc_tokens: int = 128  # training documents are cut to this many tokens (speed)
    word_dim: int = 64  # width of the dual encoder's word vectors
    word_epochs: int = 12  # epochs of the word-vector dual encoder (recipes.demo_init)
    word_dropout: float = 0.3  # share of a document's tokens the encoder drops per example
    match_scale: float = 10.0  # the wired pointer's scores are this times the encoder's
    attention_weight: float = 1.0  # weight of the pointer's attention target in the loss
    eval_every: int = 100
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
    code_positions: tuple[int, ...] = ()  # where each listed label's code token is


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
        rope_theta=config.rope_theta,
        precision="fp32",
        torch_dtype="float32",
    )
    return out


def subset_taxonomy(taxonomy: dict[str, Any], indices: Sequence[int]) -> dict[str, Any]:
    """The one-facet taxonomy with only the labels at `indices`, listed in that order."""
    facet = taxonomy["facets"][0]
    labels = [facet["labels"][i] for i in indices]
    return {**taxonomy, "facets": [{**facet, "labels": labels}]}


def listing_positions(
    compiled: CompiledTaxonomy,
    tokenizer: ModelTokenizer,
    prompt: PromptFormat,
    before: Sequence[int],
) -> tuple[int, ...]:
    """Token position of each listed label's code in the canvas prefix `before` (the plain
    canvas: the demo tokenizer ships no chat template)."""
    listing = listing_text(compiled, descriptions=tokenizer.label_descriptions)
    head = f"{prompt.instruction}\n\n{listing}{DOCUMENT_HEADER}"
    encoding = tokenizer.tokenizer.encode(head, add_special_tokens=False)
    if tuple(encoding.ids) != tuple(before):
        raise RecipeError("the demo recipe needs the plain canvas (a tokenizer without chat "
                          "template)")
    lines = listing.split("\n")
    start = head.index(listing) + len(lines[0]) + 1  # after the facet header
    starts, colons = [], []
    for line in lines[1:]:
        starts.append(start)
        colons.append(start + line.index(":"))
        start += len(line) + 1
    codes: list[int | None] = [None] * len(starts)
    for position, (a, b) in enumerate(encoding.offsets):
        line = bisect.bisect_right(starts, a) - 1
        if line >= 0 and a < b <= colons[line]:
            codes[line] = position
    if any(c is None for c in codes):
        raise RecipeError("a listed label's code is not one token of its own")
    return tuple(c for c in codes if c is not None)


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
    order: Sequence[int] | None = None,
    code_seed: int | None = None,
) -> Example:
    """A canvas listing the gold label and k - 1 random others in a random order, with codes
    reassigned by a random `code_seed`, built exactly as the engine builds it. With `order`
    given, exactly those labels in that order (and `code_seed` as given: None keeps the
    taxonomy's codes)."""
    n = len(taxonomy["facets"][0]["labels"])
    if order is None:
        k = max(1, min(k, n))
        others = rng.sample([i for i in range(n) if i != gold], k - 1)
        order = [gold, *others]
        rng.shuffle(order)
        code_seed = rng.randrange(1 << 30)
    compiled = compile_taxonomy(
        subset_taxonomy(taxonomy, order), tokenizer, pad_token_id=eos_id, code_seed=code_seed
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
    codes = listing_positions(compiled, tokenizer, prompt, template.before)
    position = list(order).index(gold)
    return Example(canvas.ids, slot, candidates[position], (start, end), candidates, position,
                   codes)


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


def _batch(examples: Sequence[Example], pad_id: int,
           device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = True
    return ids.to(device), mask.to(device)


def _listing_size(step: int, config: TrainConfig, n_labels: int, rng: random.Random) -> int:
    """Curriculum: the largest listing grows from min_k to all labels over `ramp` of training;
    `full_share` of the batches list every label (the inference canvas) throughout."""
    frac = step / max(1, config.steps)
    n_labels = min(n_labels, config.max_k or n_labels)
    low = min(config.min_k, n_labels)
    k_max = low + (n_labels - low) * min(1.0, frac / config.ramp)
    if rng.random() < config.full_share:
        return n_labels
    return rng.randint(low, max(low, round(k_max)))


def _scores(block: torch.nn.Module, rotary: Any, x: Tensor, cos: Tensor, sin: Tensor,
            head: int, queries: Tensor, keep: Tensor) -> Tensor:
    """Log attention weights of `head` of `block` for query positions `queries` [B, Q]:
    [B, Q, T], computed as the block computes them."""
    b = x.shape[0]
    hd = block.head_dim
    h = block.attn_norm(x)
    rows = slice(head * hd, (head + 1) * hd)
    q = F.linear(h, block.q.weight[rows], None if block.q.bias is None else block.q.bias[rows])
    k = F.linear(h, block.k.weight[rows], None if block.k.bias is None else block.k.bias[rows])
    q = rotary.apply(q[:, None], cos, sin)[:, 0]
    k = rotary.apply(k[:, None], cos, sin)[:, 0]
    picked = q[torch.arange(b)[:, None], queries]  # [B, Q, hd]
    scores = picked @ k.transpose(-1, -2) / math.sqrt(hd)
    return scores.masked_fill(~keep[:, None, :], float("-inf")).log_softmax(-1)


def _forward(model: DiffusionTransformer, ids: Tensor, mask: Tensor,
             examples: Sequence[Example], *, pointer: bool) -> tuple[Tensor, Tensor]:
    """The model's trunk, plus the pointer's attention target: the last layer's head 0 attends
    from the answer slot to the gold label's code."""
    cos, sin = model.rotary.cos_sin(positions_from_mask(mask))
    key_mask = mask[:, None, None, :]
    x = model.embed(ids)
    loss = torch.zeros((), device=ids.device)
    last = len(model.layers) - 1
    for index, layer in enumerate(model.layers):
        if pointer and index == last:
            slots = torch.tensor([[e.slot] for e in examples], device=ids.device)
            gold = torch.tensor([e.code_positions[e.gold] for e in examples], device=ids.device)
            point = _scores(layer, model.rotary, x, cos, sin, 0, slots, mask)[:, 0]
            loss = loss - point[torch.arange(len(examples), device=ids.device), gold].mean()
        x = layer(x, model.rotary, cos, sin, key_mask)
    return x, loss


def _start(model: DiffusionTransformer, taxonomy: dict[str, Any], config: TrainConfig,
           generator: torch.Generator, train_ids: Sequence[Sequence[int]],
           train_gold: Sequence[int], validation: tuple[Sequence[Sequence[int]], Sequence[int]],
           make: dict[str, Any]) -> WordVectors:
    """Fit the position kernels and the dual encoder, and wire them into `model`."""
    tokenizer: ModelTokenizer = make["tokenizer"]
    shape = model.shape
    names = fit_kernel(shape.rope_theta, shape.head_dim, NAME_OFFSETS, seed=config.seed)
    following = fit_kernel(shape.rope_theta, shape.head_dim, (1,), seed=config.seed)
    n = len(taxonomy["facets"][0]["labels"])
    # The inference canvas (every label, the taxonomy's order and codes) with a one-token
    # document: where each label's code sits, and the fixed tokens around the document.
    canvas = make_example(taxonomy, 0, [make["eos_id"]], n, random.Random(0),
                          order=list(range(n)), **make)
    bags = label_bags(canvas.ids, canvas.code_positions, names)
    header = tokenizer.encode(DOCUMENT_HEADER)
    if list(canvas.ids[canvas.doc[0] - len(header) : canvas.doc[0]]) != header:
        raise RecipeError("the canvas does not end its prefix with the document header")
    region = find_region(canvas.ids, canvas.doc, canvas.slot, train_ids, len(header))
    curve = fit_curve()
    code_tokens = sorted({ids[0] for ids in map(tokenizer.encode, _code_pool()) if len(ids) == 1})
    layout = layout_for(model, config.word_dim)
    words = train_word_vectors(
        train_ids, train_gold, bags, validation, region=region, curve=curve,
        vocab=shape.vocab_size, dim=config.word_dim, rank=layout.rank, zero_tokens=code_tokens,
        epochs=config.word_epochs, seed=config.seed, dropout=config.word_dropout,
    )
    wire(model, words, names=names, next_token=following,
         region=region_kernel(shape.rope_theta, shape.head_dim), curve=curve,
         code_tokens=code_tokens, colon_tokens=tokenizer.encode(":"), marker_id=region.marker,
         mask_id=make["mask_id"], generator=generator, match_scale=config.match_scale)
    return words


@torch.no_grad()
def score(
    model: DiffusionTransformer, examples: Sequence[Example], pad_id: int, batch: int = 16
) -> list[int]:
    """Predicted label position (argmax over the listed codes) for each example."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predicted: list[int] = []
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        ids, mask = _batch(chunk, pad_id, device)
        hidden = model.trunk(ids, mask)
        slots = torch.tensor([e.slot for e in chunk], device=device)
        logits = model.logits_from_hidden(hidden[torch.arange(len(chunk), device=device), slots])
        for row, e in zip(logits, chunk, strict=True):
            predicted.append(int(torch.argmax(row[list(e.candidates)])))
    model.train(was_training)
    return predicted


def _accuracy(model: DiffusionTransformer, examples: Sequence[Example], pad_id: int) -> float:
    predicted = score(model, examples, pad_id)
    return sum(p == e.gold for p, e in zip(predicted, examples, strict=True)) / len(examples)


def save_model(
    model: DiffusionTransformer, config: dict[str, Any], out: Path, *, state: dict[str, Tensor]
) -> None:
    """config.json and model.safetensors with LLaDA's reference tensor names."""
    out.mkdir(parents=True, exist_ok=True)
    names = llada.weight_names(model.shape)
    tensors = {ref: state[native].detach().cpu().contiguous().clone()
               for ref, native in names.items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def train(
    data: Path,
    out: Path,
    taxonomy: dict[str, Any],
    config: TrainConfig,
    *,
    device: str = "cpu",
    console: Console | None = None,
) -> dict[str, Any]:
    """Train on the train split, select on validation, write the model into `out`. The start
    is fitted on the CPU; training and evaluation run on `device`."""
    console = console or Console()
    started = time.monotonic()
    torch.manual_seed(config.seed)
    tokenizer = _MemoTokenizer(load_tokenizer(out))
    eos_id, mask_id = tokenizer.token_id(EOS_TOKEN), tokenizer.token_id(MASK_TOKEN)
    vocab = tokenizer.tokenizer.get_vocab_size()
    model_config = llada_config(vocab, eos_id=eos_id, mask_id=mask_id, config=config)
    shape = llada.shape_from_config(model_config)
    model = DiffusionTransformer(shape)
    generator = torch.Generator().manual_seed(config.seed)
    _init_weights(model, generator, config.n_layers)

    train_rows, val_rows = load_training_data(data)
    labels = [label["id"] for label in taxonomy["facets"][0]["labels"]]
    index = {label: i for i, label in enumerate(labels)}
    train_rows = [r for r in train_rows if r.section in index]
    if not train_rows:
        raise DatasetError("no train row has a section of the taxonomy")
    val_rows = sorted((r for r in val_rows if r.section in index), key=lambda r: r.name)
    val_rows = random.Random(config.seed).sample(val_rows, min(config.eval_docs, len(val_rows)))
    encode = tokenizer.tokenizer.encode_batch
    prompt = PromptFormat()  # the engine's defaults: what inference builds
    encoded = encode([r.text for r in train_rows], add_special_tokens=False)
    train_ids = [e.ids[: config.doc_tokens] or [eos_id] for e in encoded]
    word_ids = [e.ids[: prompt.document_token_budget] or [eos_id] for e in encoded]
    val_ids = [e.ids for e in encode([r.text for r in val_rows], add_special_tokens=False)]
    train_gold = [index[r.section] for r in train_rows]
    val_gold = [index[r.section] for r in val_rows]
    n_labels = len(labels)

    make = dict(tokenizer=tokenizer, eos_id=eos_id, mask_id=mask_id, prompt=prompt)
    with console.status("word vectors: dual encoder on the train split"):
        words = _start(model, taxonomy, config, generator, word_ids, train_gold,
                       ([ids[: prompt.document_token_budget] or [eos_id] for ids in val_ids],
                        val_gold), make)
    console.print(f"word vectors: {config.word_epochs} epochs, dual-encoder validation "
                  f"accuracy {words.accuracy:.3f}")
    model.to(device)
    model.train()

    # Validation canvases: every label in the taxonomy's order, the taxonomy's own codes.
    everything = list(range(n_labels))
    val_examples = [make_example(taxonomy, gold, ids, n_labels, random.Random(0), order=everything,
                                 **make) for ids, gold in zip(val_ids, val_gold, strict=True)]

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
    log: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Tensor] | None] = (-1.0, -1, None)
    console.print(f"[bold]demo model[/bold] {sum(p.numel() for p in model.parameters()):,} "
                  f"parameters, {len(train_rows)} train documents, {n_labels} sections")
    console.print(json.dumps(asdict(config)))
    running = attention_running = 0.0
    start_accuracy = _accuracy(model, val_examples, eos_id)
    log.append({"step": 0, "val_accuracy": start_accuracy,
                "seconds": round(time.monotonic() - started, 1)})
    console.print(f"step 0 (the wired start): validation accuracy {start_accuracy:.3f}")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("training", total=config.steps, info="")
        for step in range(config.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            k = _listing_size(step, config, n_labels, rng)
            picks = [rng.randrange(len(train_rows)) for _ in range(config.batch)]
            examples = [make_example(taxonomy, train_gold[p], train_ids[p], k, rng, **make)
                        for p in picks]
            ids, mask = _batch(examples, eos_id, model.embed.weight.device)
            slots = torch.tensor([e.slot for e in examples], device=ids.device)
            targets = torch.tensor([e.target for e in examples], device=ids.device)
            hidden, attention = _forward(model, ids, mask, examples,
                                         pointer=config.attention_weight > 0)
            rows = torch.arange(len(examples), device=ids.device)
            slot_logits = model.logits_from_hidden(hidden[rows, slots])
            answer = F.cross_entropy(slot_logits, targets)
            loss = answer + config.attention_weight * attention
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            value, attn = float(answer.detach()), float(attention.detach())
            running = 0.95 * running + 0.05 * value if step else value
            attention_running = 0.95 * attention_running + 0.05 * attn if step else attn
            progress.update(task, advance=1, info=f"k={k:2d} answer={running:.3f} "
                            f"attention={attention_running:.3f}")
            last = step + 1 == config.steps
            if (step + 1) % config.eval_every == 0 or last:
                acc = _accuracy(model, val_examples, eos_id)
                entry = {"step": step + 1, "answer_loss": round(running, 4),
                         "attention_loss": round(attention_running, 4), "val_accuracy": acc,
                         "seconds": round(time.monotonic() - started, 1)}
                log.append(entry)
                progress.console.print(f"step {step + 1}: answer loss {running:.3f}, attention "
                                       f"loss {attention_running:.3f}, validation accuracy "
                                       f"{acc:.3f} ({len(val_examples)} documents)")
                if acc > best[0]:  # written at once, so an interrupted run leaves the best
                    best = (acc, step + 1, copy.deepcopy(model.state_dict()))
                    save_model(model, model_config, out, state=best[2])
    seconds = time.monotonic() - started
    summary = {
        "config": asdict(config),
        "word_vectors_val_accuracy": round(words.accuracy, 4),
        "selected_step": best[1],
        "selected_val_accuracy": best[0],
        "log": log,
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "device": str(device),
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
    parser.add_argument("--device", default="cpu",
                        help="torch device for training (cuda); the start is fitted on the CPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        taxonomy = json.loads((args.taxonomies / "debian-sections.json").read_text("utf-8"))
        config = TrainConfig(steps=args.steps, seed=args.seed)
        train(args.data, args.out, taxonomy, config, device=args.device)
    except (RecipeError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
