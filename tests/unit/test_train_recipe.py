"""The demo model's tokenizer, training and evaluation recipes (issue 11) on a tiny synthetic
corpus: real code paths, tiny sizes. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from engine.canvas import PromptFormat, build_canvas, build_template
from engine.core import EngineCore
from engine.loader import load_model
from engine.taxonomy import assign_codes, compile_taxonomy
from engine.tokenizer import load_tokenizer
from recipes import evaluate_demo
from recipes.dataset import Package, write_jsonl
from recipes.split import SPLIT_FILES, Split, split_of
from recipes.tokenizer_recipe import (
    EOS_TOKEN,
    MASK_TOKEN,
    SPECIAL_TOKENS,
    taxonomy_strings,
    train_tokenizer,
    write_tokenizer,
)
from recipes.train_demo import (
    TrainConfig,
    _listing_size,
    make_example,
    subset_taxonomy,
    train,
)

SECTIONS = ("games", "libs", "python", "doc", "net")
WORDS = {
    "games": "play a fun arcade game with levels and a high score",
    "libs": "shared library runtime files for programs linked against it",
    "python": "python 3 module to import in scripts and packages",
    "doc": "documentation manual pages and html guide for users",
    "net": "network daemon for tcp sockets servers and proxies",
}
TAXONOMY = {
    "name": "tiny-sections",
    "version": "1",
    "facets": [
        {
            "name": "section",
            "multi": False,
            "labels": [
                {"id": s, "name": s.title(), "description": f"Packages about {s}."}
                for s in SECTIONS
            ],
        }
    ],
}


def _names(split: Split, count: int, prefix: str) -> list[str]:
    """Package names that the sha256 split puts in `split`."""
    names, i = [], 0
    while len(names) < count:
        name = f"{prefix}-{i}"
        if split_of(name) is split:
            names.append(name)
        i += 1
    return names


def _rows(split: Split, count: int, seed: int) -> list[Package]:
    rng = random.Random(seed)
    rows = []
    for i, name in enumerate(_names(split, count, split.value)):
        section = SECTIONS[i % len(SECTIONS)]
        words = WORDS[section].split()
        rng.shuffle(words)
        rows.append(Package(name, " ".join(words), "summary", section, ()))
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    write_jsonl(directory / SPLIT_FILES[Split.TRAIN], _rows(Split.TRAIN, 60, 1))
    write_jsonl(directory / SPLIT_FILES[Split.VALIDATION], _rows(Split.VALIDATION, 10, 2))
    return directory


def _tokenizer_dir(directory: Path) -> Path:
    texts = [" ".join(WORDS.values())] * 5
    write_tokenizer(train_tokenizer(texts, taxonomy_strings([TAXONOMY]), vocab_size=400),
                    directory)
    return directory


TINY = TrainConfig(d_model=96, n_layers=4, n_heads=3, rope_theta=1e8, mlp_hidden=64, steps=4,
                   batch=4, warmup=2, eval_every=2, eval_docs=6, min_k=2, word_dim=8,
                   word_epochs=1)


def test_tokenizer_has_special_tokens_first_and_no_chat_template(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(_tokenizer_dir(tmp_path))
    assert [tokenizer.token_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    assert tokenizer.chat_template is None  # the engine then builds the plain canvas
    assert tokenizer.special["mask_token"] == MASK_TOKEN
    # Words of the corpus are merged into fewer tokens than bytes; text round-trips.
    assert len(tokenizer.encode(" documentation")) < len(" documentation")
    assert tokenizer.decode(tokenizer.encode("python 3 module")) == "python 3 module"


def test_codes_with_a_leading_space_are_not_single_tokens(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(_tokenizer_dir(tmp_path))
    assert len(tokenizer.encode(" A")) == 2  # the merge " A" was dropped
    codes, form = assign_codes(5, tokenizer, True)
    assert form == "{}" and codes == ["A", "B", "C", "D", "E"]
    plain = train_tokenizer([" A B C"] * 50, vocab_size=300)
    assert len(plain.encode(" A", add_special_tokens=False).ids) == 2


def test_curriculum_grows_listings_to_the_full_taxonomy() -> None:
    config = TrainConfig(steps=100, full_share=0.5)
    rng = random.Random(0)
    early = [_listing_size(0, config, 58, rng) for _ in range(200)]
    late = [_listing_size(99, config, 58, rng) for _ in range(200)]
    assert set(early) == {config.min_k, 58}  # short listings, and full ones from the start
    assert 0.3 < early.count(58) / len(early) < 0.7  # about full_share of batches list all
    assert len(set(late)) > 10 and min(late) >= config.min_k and max(late) == 58


def test_subset_taxonomy_keeps_only_the_chosen_labels_in_order() -> None:
    subset = subset_taxonomy(TAXONOMY, [3, 0])
    assert [label["id"] for label in subset["facets"][0]["labels"]] == ["doc", "games"]
    assert len(TAXONOMY["facets"][0]["labels"]) == len(SECTIONS)  # the input is untouched


def test_make_example_is_the_engine_canvas_of_the_subset(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(_tokenizer_dir(tmp_path))
    eos, mask = tokenizer.token_id(EOS_TOKEN), tokenizer.token_id(MASK_TOKEN)
    doc = tokenizer.encode(WORDS["python"])
    example = make_example(TAXONOMY, 2, doc, 3, random.Random(7), tokenizer, eos_id=eos,
                           mask_id=mask, prompt=PromptFormat())
    assert len(example.candidates) == 3
    assert example.ids[example.slot] == mask
    assert example.candidates[example.gold] == example.target
    assert list(example.ids[example.doc[0] : example.doc[1]]) == doc
    # Codes are written bare, so the answer token is the token that opens the gold label's
    # line in the listing ("<code>: <name>"): the model copies it.
    listing = example.ids[: example.doc[0]]
    colon = tokenizer.encode(":")[0]
    line_openers = [listing[i] for i in range(1, len(listing)) if listing[i + 1 :][:1] == (colon,)
                    and listing[i - 1] == tokenizer.encode("\n")[0]]
    assert example.target in line_openers
    assert sorted(line_openers) == sorted(example.candidates)
    # Rebuild with the same random draws through the engine: the identical canvas.
    rng = random.Random(7)
    others = rng.sample([0, 1, 3, 4], 2)
    order = [2, *others]
    rng.shuffle(order)
    compiled = compile_taxonomy(subset_taxonomy(TAXONOMY, order), tokenizer, pad_token_id=eos,
                                code_seed=rng.randrange(1 << 30))
    template = build_template(compiled, tokenizer, mask_token_id=mask, read_shift=0)
    assert build_canvas(template, doc).ids == example.ids
    assert compiled.facets[0].label_ids[example.gold] == "python"


def test_listings_vary_codes_and_order_between_examples(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(_tokenizer_dir(tmp_path))
    eos, mask = tokenizer.token_id(EOS_TOKEN), tokenizer.token_id(MASK_TOKEN)
    rng = random.Random(0)
    targets, canvases = set(), set()
    for _ in range(20):
        example = make_example(TAXONOMY, 0, tokenizer.encode("a game"), 5, rng, tokenizer,
                               eos_id=eos, mask_id=mask, prompt=PromptFormat())
        targets.add(example.target)
        canvases.add(example.ids)
    assert len(targets) > 1  # the gold label does not keep one code
    assert len(canvases) > 1


def _train(dataset: Path, out: Path, seed: int = 0) -> dict:
    _tokenizer_dir(out)
    config = TrainConfig(**{**TINY.__dict__, "seed": seed})
    return train(dataset, out, TAXONOMY, config)


def test_train_writes_a_model_the_engine_serves(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    summary = _train(dataset, out)
    assert {p.name for p in out.iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "training.json"
    }
    assert summary["selected_step"] in {entry["step"] for entry in summary["log"]}
    assert [entry["step"] for entry in summary["log"]] == [0, 2, 4]  # 0: the wired start
    assert summary["selected_step"] != 0  # a trained checkpoint is shipped
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llada" and config["d_model"] == 96
    core = EngineCore(load_model(out), load_tokenizer(out))
    results = core.classify(TAXONOMY, ["a fun arcade game", "a python module"])
    assert [len(r.labels) for r in results] == [1, 1]
    assert all(r.labels[0].label in SECTIONS for r in results)


def test_training_is_deterministic_and_seeded(dataset: Path, tmp_path: Path) -> None:
    def digest(out: Path) -> str:
        return hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()

    _train(dataset, tmp_path / "a")
    _train(dataset, tmp_path / "b")
    _train(dataset, tmp_path / "c", seed=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_training_never_reads_held_out_rows(dataset: Path, tmp_path: Path) -> None:
    # A held-out row smuggled into train.jsonl stops the run instead of being trained on.
    smuggled = tmp_path / "data"
    smuggled.mkdir()
    rows = _rows(Split.TRAIN, 10, 3) + _rows(Split.HELD_OUT, 1, 4)
    write_jsonl(smuggled / SPLIT_FILES[Split.TRAIN], rows)
    write_jsonl(smuggled / SPLIT_FILES[Split.VALIDATION], _rows(Split.VALIDATION, 3, 5))
    from recipes.errors import DatasetError

    with pytest.raises(DatasetError, match="another split"):
        _train(smuggled, tmp_path / "model")


def test_reordered_is_a_seeded_permutation() -> None:
    a = evaluate_demo.reordered(TAXONOMY, 1)
    b = evaluate_demo.reordered(TAXONOMY, 1)
    ids = [label["id"] for label in a["facets"][0]["labels"]]
    assert ids == [label["id"] for label in b["facets"][0]["labels"]]
    assert sorted(ids) == sorted(SECTIONS) and ids != list(SECTIONS)


def test_evaluate_reports_demo_figures(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    _train(dataset, out)
    taxonomy_dir = tmp_path / "taxonomies"
    taxonomy_dir.mkdir()
    (taxonomy_dir / "debian-sections.json").write_text(json.dumps(TAXONOMY))
    result = evaluate_demo.evaluate(dataset, out, taxonomy_dir, limit=6, with_baseline=False)
    demo = result["demo"]
    assert result["validation_documents"] == 6
    assert 0.0 <= demo["sections"]["accuracy"] <= 1.0
    # Single-token codes: autoregressive decoding is the same one-pass conditional.
    assert demo["diffusion_autoregressive_agreement"] == 1.0
    robust = demo["robustness"]
    expected = round(100 * (demo["sections"]["accuracy"]
                            - robust["accuracy_codes_reassigned_reordered"]), 2)
    assert robust["drop_points"] == expected
    assert "no debtags.json" in demo["debtags"]  # the test's taxonomy dir has none


def test_debtags_micro_f1_pools_every_facet(dataset: Path, tmp_path: Path) -> None:
    """The demo's debtags figure is sklearn's pooled micro-F1 of the tags the engine returns."""
    from sklearn.metrics import f1_score

    out = tmp_path / "model"
    _train(dataset, out)
    tags = {"facets": [
        {"name": "use", "multi": True, "labels": [{"id": "use::gaming"}, {"id": "use::coding"}]},
        {"name": "interface", "multi": True, "labels": [{"id": "interface::x11"},
                                                         {"id": "interface::shell"}]},
    ]}
    texts = ["a fun arcade game", "a python module", "a shell tool"]
    gold = [("use::gaming", "interface::x11"), ("use::coding",), ("interface::shell", "x::y")]
    core = EngineCore(load_model(out), load_tokenizer(out))
    micro = evaluate_demo.debtags_micro_f1(core, tags, texts, gold)
    ids = [label["id"] for facet in tags["facets"] for label in facet["labels"]]
    returned = [{s.label for s in r.labels} for r in core.classify(core.compile(tags), texts)]
    truth = [[int(i in g) for i in ids] for g in gold]
    predicted = [[int(i in r) for i in ids] for r in returned]
    assert micro == pytest.approx(f1_score(truth, predicted, average="micro", zero_division=0))
    assert all(r for r in returned)  # every facet answers at least its top label
