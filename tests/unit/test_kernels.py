"""Slot ops (issue 12): the plain torch reference first, then each implementation against it.

The Triton kernels run under the Triton interpreter on CPU. Triton decides whether its own
library functions are interpreted when it is first imported, so those runs happen in one child
process started with TRITON_INTERPRET=1 (this file, run as a script); the parent compares the
child's results with the reference case by case.

Tolerances: every implementation and the reference accumulate in float32, and a product of two
bf16 or fp16 numbers is exact in float32, so the only differences are summation order over d
and over vocabulary chunks/tiles: about 1e-6 relative on logits of size ~10 here. The bounds
below leave an order of magnitude of headroom and still catch any real error (a wrong chunk
boundary or a missed column moves the log-sum-exp by far more).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor

import kernels
from kernels import Confidence, InvalidSlotInput, KernelUnavailable, SlotOps, SlotScores, reference
from kernels._chunked import vocab_chunk

TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-5},
    torch.bfloat16: {"atol": 2e-4, "rtol": 2e-5},  # inputs rounded once; products still exact
    torch.float16: {"atol": 2e-4, "rtol": 2e-5},
}


@dataclass(frozen=True)
class Case:
    """One input shape; `shared` gives [K] candidate ids, `scale` stretches the logits."""

    n: int
    vocab: int
    dim: int
    k: int
    seed: int
    shared: bool = False
    scale: float = 1.0

    def __str__(self) -> str:
        extra = ("-shared" if self.shared else "") + (
            f"-x{self.scale:g}" if self.scale != 1 else ""
        )
        return f"n{self.n}-v{self.vocab}-d{self.dim}-k{self.k}-s{self.seed}{extra}"


EDGE_CASES = [
    Case(n=17, vocab=200, dim=40, k=1, seed=1),  # N off the 16-row block, V off chunk and tile
    Case(n=1, vocab=33, dim=16, k=3, seed=2, shared=True),  # one row, [K] ids
    Case(n=16, vocab=128, dim=32, k=4, seed=3),  # everything a multiple of the blocks
    Case(n=9, vocab=97, dim=33, k=5, seed=4, scale=30.0),  # logits in the hundreds: stability
    Case(n=20, vocab=64, dim=24, k=7, seed=5, shared=True),
]


def random_cases(count: int, seed: int, max_n: int, max_vocab: int) -> list[Case]:
    """Shapes drawn at random (seeded, so a failure names a reproducible case)."""
    rng = random.Random(seed)
    return [
        Case(
            n=rng.randint(1, max_n),
            vocab=rng.randint(2, max_vocab),
            dim=rng.randint(1, 72),
            k=rng.randint(1, 6),
            seed=100 + i,
            shared=rng.random() < 0.3,
        )
        for i in range(count)
    ]


CHUNKED_CASES = EDGE_CASES + random_cases(8, seed=12, max_n=70, max_vocab=700)
INTERPRETER_CASES = EDGE_CASES + random_cases(3, seed=21, max_n=24, max_vocab=160)
INTERPRETER_DTYPES = [torch.float32, torch.bfloat16]


def make_inputs(case: Case, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Deterministic hidden [N, d], weight [V, d] and candidate ids [N, K] or [K]."""
    g = torch.Generator().manual_seed(case.seed)
    hidden = (torch.randn(case.n, case.dim, generator=g) * case.scale).to(dtype)
    weight = torch.randn(case.vocab, case.dim, generator=g).to(dtype)
    shape = (case.k,) if case.shared else (case.n, case.k)
    ids = torch.randint(0, case.vocab, shape, generator=g)
    ids[..., 0] = case.vocab - 1  # the last column lives in the ragged last chunk or tile
    return hidden, weight, ids


def assert_scores(want: SlotScores, want_logprobs: Tensor, got: SlotScores, dtype: torch.dtype):
    tol = TOLERANCES[dtype]
    assert got.lse.dtype == torch.float32 and got.candidate_logits.dtype == torch.float32
    assert got.lse.shape == want.lse.shape
    assert got.candidate_logits.shape == want.candidate_logits.shape
    torch.testing.assert_close(got.lse, want.lse, **tol)
    torch.testing.assert_close(got.candidate_logits, want.candidate_logits, **tol)
    torch.testing.assert_close(got.logprobs(), want_logprobs, **tol)


def assert_confidence(
    want: Confidence, got: Confidence, hidden: Tensor, weight: Tensor, dtype: torch.dtype
):
    tol = TOLERANCES[dtype]
    assert got.max_prob.dtype == torch.float32 and got.argmax.dtype == torch.int64
    torch.testing.assert_close(got.max_prob, want.max_prob, **tol)
    # A different argmax is only acceptable when the reference gives it the same probability.
    prob_at_got = reference.slot_logprobs(hidden, weight, got.argmax[:, None]).exp().squeeze(1)
    near_tie = (prob_at_got - want.max_prob).abs() <= tol["atol"]
    assert bool(((got.argmax == want.argmax) | near_tie).all())


# -- the reference itself --------------------------------------------------------------------


def test_reference_matches_hand_computed_values():
    # weight = identity makes the logits the hidden states themselves.
    hidden = torch.tensor([[0.0, 1.0, 2.0], [3.0, 3.0, -1.0]])
    weight = torch.eye(3)
    lse = torch.tensor([math.log(1 + math.e + math.e**2), math.log(2 * math.e**3 + math.e**-1)])
    scores = reference.slot_scores(hidden, weight, torch.tensor([[2, 0], [1, 2]]))
    torch.testing.assert_close(scores.lse, lse)
    torch.testing.assert_close(scores.candidate_logits, torch.tensor([[2.0, 0.0], [3.0, -1.0]]))
    logprobs = reference.slot_logprobs(hidden, weight, torch.tensor([2, 0]))
    torch.testing.assert_close(logprobs, torch.tensor([[2.0, 0.0], [-1.0, 3.0]]) - lse[:, None])
    conf = reference.confidence(hidden, weight)
    assert conf.argmax.tolist() == [2, 0]  # a tie (3.0, 3.0) goes to the first index
    torch.testing.assert_close(conf.max_prob, torch.exp(torch.tensor([2.0, 3.0]) - lse))


def test_reference_logprobs_agree_with_its_scores():
    hidden, weight, ids = make_inputs(EDGE_CASES[0], torch.float32)
    scores = reference.slot_scores(hidden, weight, ids)
    torch.testing.assert_close(scores.logprobs(), reference.slot_logprobs(hidden, weight, ids))


# -- chunked torch twin ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("chunk", [None, 64], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("case", CHUNKED_CASES, ids=str)
def test_chunked_slot_logprobs_matches_reference(case: Case, chunk: int | None, dtype):
    hidden, weight, ids = make_inputs(case, dtype)
    want = reference.slot_scores(hidden, weight, ids)
    want_logprobs = reference.slot_logprobs(hidden, weight, ids)
    ops = SlotOps.for_device("cpu", prefer="torch", chunk=chunk)
    assert ops.name == "torch-chunked"
    assert_scores(want, want_logprobs, ops.slot_logprobs(hidden, weight, ids), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("chunk", [None, 64], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("case", CHUNKED_CASES, ids=str)
def test_chunked_confidence_matches_reference(case: Case, chunk: int | None, dtype):
    hidden, weight, _ = make_inputs(case, dtype)
    want = reference.confidence(hidden, weight)
    got = SlotOps.for_device("cpu", prefer="torch", chunk=chunk).confidence(hidden, weight)
    assert_confidence(want, got, hidden, weight, dtype)


def test_chunked_argmax_takes_first_index_on_a_tie_across_chunks():
    weight = torch.zeros(10, 2)
    weight[3, 0] = weight[8, 0] = 1.0  # tokens 3 and 8 tie, in different chunks of 5
    hidden = torch.tensor([[2.0, 0.0]])
    got = SlotOps.for_device("cpu", prefer="torch", chunk=5).confidence(hidden, weight)
    assert got.argmax.tolist() == [3]


def test_chunked_budget_bounds_the_logits_block():
    budget = 1 << 20
    for rows in (1, 100, 4096, 8192):
        chunk = vocab_chunk(rows, 126_464, budget)
        assert chunk >= 128 and (rows * chunk * 4 <= budget or chunk == 128)
    assert vocab_chunk(4, 50, budget) == 50  # never more than the vocabulary


def test_chunked_handles_more_rows_than_one_block():
    case = Case(n=8200, vocab=40, dim=8, k=2, seed=9)  # crosses the 8192-row block
    hidden, weight, ids = make_inputs(case, torch.float32)
    want = reference.slot_scores(hidden, weight, ids)
    got = SlotOps.for_device("cpu", prefer="torch").slot_logprobs(hidden, weight, ids)
    assert_scores(want, reference.slot_logprobs(hidden, weight, ids), got, torch.float32)


# -- Triton kernels under the interpreter ----------------------------------------------------


def _key(case: Case, dtype: torch.dtype) -> str:
    return f"{case}/{dtype}"


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Tensor]]:
    """Results of the Triton kernels for every interpreter case, from one child process."""
    if not kernels.triton_available():
        pytest.skip("triton is not installed; `pip install -e '.[dev]'` installs it")
    out = tmp_path_factory.mktemp("interpreter") / "results.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out)


@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES, ids=str)
@pytest.mark.parametrize("case", INTERPRETER_CASES, ids=str)
def test_triton_slot_logprobs_matches_reference(case: Case, dtype, interpreted):
    hidden, weight, ids = make_inputs(case, dtype)
    want = reference.slot_scores(hidden, weight, ids)
    want_logprobs = reference.slot_logprobs(hidden, weight, ids)
    got = interpreted[_key(case, dtype)]
    assert got["name"] == "triton" and got["interpreted"] is True
    scores = SlotScores(got["lse"], got["candidate_logits"])
    assert_scores(want, want_logprobs, scores, dtype)


@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES, ids=str)
@pytest.mark.parametrize("case", INTERPRETER_CASES, ids=str)
def test_triton_confidence_matches_reference(case: Case, dtype, interpreted):
    hidden, weight, _ = make_inputs(case, dtype)
    want = reference.confidence(hidden, weight)
    got = interpreted[_key(case, dtype)]
    assert_confidence(want, Confidence(got["max_prob"], got["argmax"]), hidden, weight, dtype)


def run_interpreter_cases(out: Path) -> None:
    """Child process body: run every interpreter case through the Triton kernels, save all."""
    ops = SlotOps.for_device("cpu", prefer="triton")
    results: dict[str, dict[str, object]] = {}
    for case in INTERPRETER_CASES:
        for dtype in INTERPRETER_DTYPES:
            hidden, weight, ids = make_inputs(case, dtype)
            scores = ops.slot_logprobs(hidden, weight, ids)
            conf = ops.confidence(hidden, weight)
            results[_key(case, dtype)] = {
                "name": ops.name,
                "interpreted": ops.interpreted,
                "lse": scores.lse,
                "candidate_logits": scores.candidate_logits,
                "max_prob": conf.max_prob,
                "argmax": conf.argmax,
            }
    torch.save(results, out)


# -- choosing the implementation -------------------------------------------------------------


def test_auto_on_cpu_is_the_chunked_twin():
    assert SlotOps.for_device("cpu").name == "torch-chunked"
    assert kernels.default_ops("cpu").name == "torch-chunked"


def test_auto_on_cuda_prefers_triton_when_installed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    want = "triton" if kernels.triton_available() else "torch-chunked"
    assert SlotOps.for_device("cuda").name == want
    assert SlotOps.for_device("cuda", prefer="torch").name == "torch-chunked"


def test_triton_off_cuda_without_interpreter_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelUnavailable):
        SlotOps.for_device("cpu", prefer="triton")


def test_triton_missing_is_reported(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # what `import triton` sees when absent
    assert not kernels.triton_available()
    assert SlotOps.for_device("cuda").name == "torch-chunked"
    with pytest.raises(KernelUnavailable, match="not installed"):
        SlotOps.for_device("cuda", prefer="triton")


def test_unknown_preference_is_rejected():
    with pytest.raises(ValueError, match="prefer"):
        SlotOps.for_device("cpu", prefer="fastest")  # type: ignore[arg-type]


def test_package_works_without_triton():
    # A fresh interpreter in which `import triton` fails: the package imports and computes.
    script = (
        "import sys, json; sys.modules['triton'] = None\n"
        "import torch, kernels\n"
        "h, w = torch.randn(3, 8), torch.randn(20, 8)\n"
        "s = kernels.slot_logprobs(h, w, torch.tensor([1, 19]))\n"
        "print(json.dumps({'name': kernels.SlotOps.for_device('cuda').name,\n"
        "                  'triton_loaded': 'kernels._triton' in sys.modules,\n"
        "                  'shape': list(s.candidate_logits.shape)}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {
        "name": "torch-chunked",
        "triton_loaded": False,
        "shape": [3, 2],
    }


def test_module_functions_use_the_default_implementation():
    hidden, weight, ids = make_inputs(EDGE_CASES[3], torch.float32)
    want = reference.slot_scores(hidden, weight, ids)
    want_conf = reference.confidence(hidden, weight)
    assert_scores(want, want.logprobs(), kernels.slot_logprobs(hidden, weight, ids), torch.float32)
    got = kernels.confidence(hidden, weight)
    assert_confidence(want_conf, got, hidden, weight, torch.float32)


# -- inputs ----------------------------------------------------------------------------------


def test_empty_batch_gives_empty_float32_results():
    ops = SlotOps.for_device("cpu")
    weight = torch.randn(10, 4, dtype=torch.bfloat16)
    hidden = torch.empty(0, 4, dtype=torch.bfloat16)
    scores = ops.slot_logprobs(hidden, weight, torch.tensor([1, 2, 3]))
    assert scores.lse.shape == (0,) and scores.candidate_logits.shape == (0, 3)
    assert scores.candidate_logits.dtype == torch.float32
    conf = ops.confidence(hidden, weight)
    assert conf.max_prob.shape == (0,) and conf.argmax.dtype == torch.int64


@pytest.mark.parametrize(
    ("hidden", "weight", "ids", "message"),
    [
        (torch.randn(2, 4), torch.randn(10, 5), torch.tensor([1]), "d=4"),
        (torch.randn(2, 4, 1), torch.randn(10, 4), torch.tensor([1]), r"\[N, d\]"),
        (torch.randn(2, 4), torch.randn(10, 4).double(), torch.tensor([1]), "dtype"),
        (torch.randn(2, 4).long(), torch.randn(10, 4).long(), torch.tensor([1]), "floating"),
        (torch.randn(2, 4), torch.randn(0, 4), torch.tensor([0]), "empty"),
        (torch.randn(2, 4), torch.randn(10, 4), torch.tensor([10]), r"\[0, 10\)"),
        (torch.randn(2, 4), torch.randn(10, 4), torch.tensor([[-1], [2]]), r"\[0, 10\)"),
        (torch.randn(2, 4), torch.randn(10, 4), torch.tensor([1.0]), "integer"),
        (torch.randn(2, 4), torch.randn(10, 4), torch.tensor([True]), "integer"),
        (torch.randn(2, 4), torch.randn(10, 4), torch.zeros(3, 1, dtype=torch.long), "N=2"),
        (torch.randn(2, 4), torch.randn(10, 4), torch.zeros(2, 0, dtype=torch.long), "K >= 1"),
    ],
    ids=[
        "d-mismatch",
        "3d-hidden",
        "dtype-mismatch",
        "integer-weights",
        "empty-vocab",
        "id-too-large",
        "id-negative",
        "float-ids",
        "bool-ids",
        "row-mismatch",
        "no-candidates",
    ],
)
def test_inconsistent_inputs_are_rejected(hidden, weight, ids, message):
    ops = SlotOps.for_device("cpu")
    with pytest.raises(InvalidSlotInput, match=message):
        ops.slot_logprobs(hidden, weight, ids)


def test_confidence_rejects_inconsistent_head():
    with pytest.raises(InvalidSlotInput):
        kernels.confidence(torch.randn(2, 4), torch.randn(10, 3))


def test_int32_candidate_ids_are_accepted():
    hidden, weight, ids = make_inputs(EDGE_CASES[0], torch.float32)
    want = reference.slot_scores(hidden, weight, ids)
    got = kernels.slot_logprobs(hidden, weight, ids.int())
    assert_scores(want, want.logprobs(), got, torch.float32)


def test_public_api_is_pinned():
    assert sorted(kernels.__all__) == [
        "Confidence",
        "InvalidSlotInput",
        "KernelError",
        "KernelUnavailable",
        "Prefer",
        "SlotOps",
        "SlotScores",
        "confidence",
        "default_ops",
        "slot_logprobs",
        "triton_available",
    ]
    assert issubclass(InvalidSlotInput, ValueError)
    assert issubclass(KernelUnavailable, kernels.KernelError)


if __name__ == "__main__":
    run_interpreter_cases(Path(sys.argv[1]))
