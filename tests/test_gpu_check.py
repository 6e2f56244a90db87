"""`python -m minibert gpu-check`: its refusal without CUDA, and its checks run on a CPU on tiny shapes."""
import pytest
import torch

from minibert.__main__ import main as minibert_main
from minibert.config import BertConfig
from minibert.tools import gpu_check

TINY = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CPU = torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu-check would run")
def test_refuses_in_one_line_without_cuda(capsys, tmp_path):
    assert minibert_main(["gpu-check", "--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu-check needs a CUDA GPU; torch sees none here (torch ") and "\n" not in err
    assert not (tmp_path / "g.json").exists()


def test_refuses_an_unknown_model_in_one_line(capsys):
    assert gpu_check.main(["--models", "base,huge"]) == 2
    assert capsys.readouterr().err.strip() == "error: --models: huge is not base or large"


def test_figure_judges_ranges_and_equality():
    assert gpu_check.figure("c", "f", 0.01, (None, 5e-2))["ok"] is True
    assert gpu_check.figure("c", "f", 0.1, (None, 5e-2))["ok"] is False
    assert gpu_check.figure("c", "f", 0.1, (0.2, 0.6))["ok"] is False
    assert gpu_check.figure("c", "f", 1, 0)["ok"] is False
    assert gpu_check.figure("c", "f", 3.0, None)["ok"] is None
    line = gpu_check.format_figure({"model": "base", **gpu_check.figure("c", "f", 0.1, (None, 5e-2))})
    assert "..0.05" in line and "OUT OF RANGE" in line


def _all_in_range(figures, names):
    assert [f["figure"] for f in figures] == names
    for f in figures:
        assert f["ok"] is not False, f


@pytest.mark.slow  # torch.compile builds C++ kernels: minutes on a busy CPU
def test_the_cpu_possible_checks_pass_on_a_tiny_model():
    _all_in_range(gpu_check.check_precision(CPU, TINY, "bf16", shape=(4, 5, 20)), ["logits bf16 vs fp32, max |diff|"])
    _all_in_range(gpu_check.check_syncs(CPU, TINY, "fp32", shape=(4, 5, 20), steps=2),
                  ["dispatched host-syncing ops / step"])
    ceiling = gpu_check.matmul_ceiling(CPU, torch.float32, n=256)
    speed = gpu_check.check_speed(CPU, TINY, "fp32", (4, 5, 20), "tiny", ceiling, steps=2)
    assert [f["figure"] for f in speed] == ["tiny eager tokens/s", "tiny eager MFU", "tiny compile tokens/s",
                                            "tiny compile MFU", "tiny compile / eager tokens/s",
                                            "tiny compile vs eager logits, max |diff|"]
    assert all(f["value"] > 0 for f in speed[:5])  # timings on a shared CPU: measured, not judged
    assert speed[-1]["ok"], speed[-1]  # the compiled model computes what eager computes
    _all_in_range(gpu_check.check_attention(CPU, TINY, "fp32"),
                  ["SDPA priority order"] + [f"SDPA backend, {m}, {b}" for m in ("train", "eval")
                                             for b in ("padded", "unpadded")])
    resume = gpu_check.check_resume(CPU, TINY, "fp32")
    _all_in_range(resume, ["stopped after epoch", "resumed vs straight through: train loss, max |diff|",
                           "resumed vs straight through: best epoch equal"])
    assert all(f["ok"] for f in resume)
