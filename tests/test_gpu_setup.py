"""The GPU path's decisions, checked on a CPU with mocked device properties: precision, TF32, the memory estimate,
a resume on another kind of device, every rank's RNG state, and no host sync in a training step."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from minibert import Bert, BertConfig, SequenceClassifier
from minibert.config import PRESETS
from minibert.model import Dropout
from minibert.tokenizer import pad_batch
from minibert.tools.dispatch import DispatchCounter
from minibert.training import device as dev
from minibert.training.device import allow_tf32, resolve_precision, to_device
from minibert.training.inputs import check_resume_compute
from minibert.training.memory import GIB, check_fits_on_gpu, estimate
from minibert.training.rundir import load_state, rng_states, save_state

CUDA = torch.device("cuda", 0)  # a device object needs no GPU; the properties it is asked about are mocked


@pytest.fixture
def gpu(monkeypatch):
    """A GPU of a given compute capability, as torch.cuda reports it."""
    def make(capability, name):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts, wrongly
    return make


@pytest.mark.parametrize("capability,name,expected", [((9, 0), "NVIDIA H100", "bf16"), ((8, 0), "NVIDIA A100", "bf16"),
                                                      ((7, 0), "Tesla V100", "fp16"), ((7, 5), "Tesla T4", "fp16")])
def test_auto_is_bf16_only_where_the_gpu_has_it_natively(gpu, capability, name, expected):
    gpu(capability, name)
    assert resolve_precision("auto", CUDA) == expected
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_bf16_is_refused_on_a_gpu_that_emulates_it(gpu):
    gpu((7, 0), "Tesla V100")
    with pytest.raises(ValueError, match=r"Tesla V100 \(compute capability 7.0\) only emulates bf16.*--precision fp16"):
        resolve_precision("bf16", CUDA)


def test_tf32_only_in_a_mixed_precision_run():
    before = torch.get_float32_matmul_precision()
    try:
        allow_tf32(CUDA, "bf16")
        assert torch.get_float32_matmul_precision() == "high"
        allow_tf32(CUDA, "fp32")  # an fp32 run matches a CPU's numbers: no TF32
        assert torch.get_float32_matmul_precision() == "highest"
        allow_tf32(torch.device("cpu"), "bf16")  # a CPU has no TF32: nothing changes
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)


def test_the_estimate_refuses_what_will_not_fit_and_names_the_flags():
    large = PRESETS["large"][1]
    need = estimate(large, 32, 512, "bf16")
    assert 15 * GIB < need["total"] < 40 * GIB  # BERT-large on IMDB-length batches: more than a 16 GiB card
    assert need["weights"] == pytest.approx(4 * 335e6, rel=0.02)  # 335M parameters in fp32
    with pytest.raises(ValueError) as e:
        check_fits_on_gpu(large, 32, 1, 512, "bf16", "finetune", 16 * GIB, "--device cuda:0 (Tesla V100-16GB)")
    line = str(e.value)
    assert "\n" not in line and "16.0 GiB free" in line and "--device cuda:0" in line
    assert "--grad-accum 2" in line and "--max-length 256" in line and "--batch-size" in line
    check_fits_on_gpu(large, 32, 2, 512, "bf16", "finetune", 16 * GIB, "cuda:0")  # the advice holds
    check_fits_on_gpu(large, 32, 1, 256, "bf16", "finetune", 16 * GIB, "cuda:0")
    check_fits_on_gpu(PRESETS["base"][1], 32, 1, 64, "bf16", "finetune", 16 * GIB, "cuda:0")  # SST-2: fits
    assert estimate(large, 32, 512, "fp32")["activations"] == 2 * need["activations"]


def test_a_resume_in_another_precision_is_refused_and_another_device_said_aloud(gpu, capsys):
    gpu((9, 0), "NVIDIA H100")
    config = {"precision": "fp32", "gpu": None, "args": {"precision": "auto"}}  # started on a CPU
    here = SimpleNamespace(precision="bf16", device=CUDA, rank=0, main=True)
    with pytest.raises(ValueError, match=r"fp32 on cpu; here its --precision auto resolves to bf16 on NVIDIA H100.*"
                                         r"--precision fp32"):
        check_resume_compute(config, here, "runs/x")
    check_resume_compute(config, SimpleNamespace(precision="fp32", device=CUDA, rank=0, main=True), "runs/x")
    assert "started on cpu and resumes on NVIDIA H100" in capsys.readouterr().err


def test_every_ranks_rng_state_is_saved_and_each_rank_gets_its_own(tmp_path):
    """A checkpoint of 2 ranks' states (as torchrun's all-gather hands them to rank 0); each rank restores its own."""
    clf = SequenceClassifier(Bert(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16)), 2)
    opt = torch.optim.AdamW(clf.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    torch.manual_seed(1)
    rank0 = rng_states(torch.device("cpu"))[0]
    torch.manual_seed(2)
    rank1 = rng_states(torch.device("cpu"))[0]
    save_state(tmp_path / "c.pt", clf, opt, sched, None, [rank0, rank1], {"epoch": 1, "history": [], "seconds": 0,
                                                                          "train_tokens": 0, "train_seconds": 0})
    for rank, seed in ((0, 1), (1, 2)):
        load_state(tmp_path / "c.pt", clf, opt, sched, None, torch.device("cpu"), rank)
        drawn = torch.rand(3)
        torch.manual_seed(seed)
        assert torch.equal(drawn, torch.rand(3)), f"rank {rank} got another rank's RNG state"


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pairs"])
def test_a_training_step_never_waits_for_the_host(pooling, pairs):
    """Forward + backward of the classifier on a padded batch as the batcher makes it (lengths on the host):
    no item(), nonzero, masked_select or boolean indexing, which on a GPU drain its queue."""
    torch.manual_seed(0)
    clf = SequenceClassifier(Bert(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64)), 3, pooling).train()
    lengths = [12, 5, 9, 3]
    ids = [torch.randint(5, 100, (n,)).tolist() for n in lengths]
    types = [[0] * (n // 2) + [1] * (n - n // 2) if pairs else [0] * n for n in lengths]
    batch = to_device(pad_batch(ids, types), torch.device("cpu"))
    with DispatchCounter() as count:
        F.cross_entropy(clf(**batch), torch.tensor([0, 1, 2, 0])).backward()
    assert count.syncs == 0, count.sync_ops
    assert count.kernels > 100  # it did count the step


def test_a_six_layer_training_step_launches_at_most_380_kernels():
    """Issue 30's bar: a fifth fewer than the 475 of c1ed30e on MiniLM's 6 layers (the count does not depend on the
    hidden size); bench's dispatch rows count the same on MiniLM itself and 32 real SST-2 sentences."""
    torch.manual_seed(0)
    clf = SequenceClassifier(Bert(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=6,
                                             num_attention_heads=4, intermediate_size=64)), 2).train()
    batch = to_device(pad_batch([torch.randint(5, 100, (n,)).tolist() for n in (12, 5, 9, 3)], None),
                      torch.device("cpu"))
    with DispatchCounter() as count:
        F.cross_entropy(clf(**batch), torch.tensor([0, 1, 1, 0])).backward()
    assert count.syncs == 0 and count.kernels <= 380, (count.kernels, count.sync_ops)


def test_dropout_is_f_dropouts_mask_bit_for_bit():
    """model.Dropout (torch.native_dropout, one kernel each way) draws what F.dropout draws, from the same random
    stream, and gives the same bits forward and backward: the committed study's runs stay reproducible."""
    x = torch.randn(32, 20, 64, requires_grad=True)
    grad = torch.randn(32, 20, 64)
    outs = []
    for drop in (lambda t: F.dropout(t, 0.1, training=True), Dropout(0.1).train()):
        torch.manual_seed(3)
        y = drop(x)
        outs.append((y, torch.autograd.grad(y, x, grad)[0], torch.rand(4)))  # the stream after it, too
    for ours, theirs in zip(*outs):
        assert torch.equal(ours.view(torch.int32), theirs.view(torch.int32))  # -0.0 too
    assert Dropout(0.1).eval()(x) is x  # evaluation: no op at all


def test_the_counter_sees_a_sync():
    with DispatchCounter() as count:
        x = torch.arange(6.0)
        x[x > 2].sum().item()
    assert count.syncs == 2 and count.sync_ops == {"index": 1, "_local_scalar_dense": 1}  # x[mask], .item()


def test_lengths_stay_on_the_host():
    assert dev.HOST_KEYS == ("lengths",)
    batch = to_device(pad_batch([[1, 2, 3], [4]]), torch.device("meta"))
    assert batch["lengths"].device.type == "cpu" and batch["input_ids"].device.type == "meta"


def test_batches_are_padded_to_a_multiple_of_8_on_a_gpu_only():
    """Tensor cores want aligned shapes; a CPU gains nothing, and its runs keep their attention-dropout draws."""
    import numpy as np

    from minibert.data.encoding import Encoded, batches
    from minibert.training.device import COMPILE_BUCKET, length_multiple

    assert (length_multiple(CUDA), length_multiple(torch.device("cpu")), length_multiple(CUDA, compiled=True)) == (
        8, 1, COMPILE_BUCKET)
    lengths = np.array([3, 13, 9, 30])
    enc = Encoded([[1] * n for n in lengths], [[0] * n for n in lengths], [0, 1, 0, 1], lengths)
    widths = {m: [b["input_ids"].shape[1] for b in batches(enc, 2, shuffle=False, multiple_of=m, max_length=30)]
              for m in (1, 8)}
    assert widths == {1: [30, 9], 8: [30, 16]}  # rounded up, but never past max_length
