"""`transformers` is the test-only reference: importing minibert, train.py or eval.py never loads it.

parity.py and bench.py import it inside their functions, when a comparison actually runs."""
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
loaded = sorted(m for m in sys.modules if m == "transformers" or m.startswith("transformers."))
print(loaded)
"""


def test_no_module_imports_transformers_when_imported():
    run = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_benchmark_without_transformers_says_how_to_install(monkeypatch):
    from minibert.tools import bench

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install -e '\.\[test\]'"):
        bench.make_pair(bench.TINY, "cpu")
