"""A write that finds no room (a full disk, a quota, a file size limit) during a run: one line that names the folder
and the space the file needed, the previous checkpoint intact, and --resume continuing from it (issue 33, case 2).

A full disk is mocked (a write that raises ENOSPC, as torch.save wraps it; a disk that reports little free space); a
file size limit is real: train.py runs under RLIMIT_FSIZE (what `ulimit -f` sets), which any user may lower, and
Python answers a write past it with EFBIG instead of dying of SIGXFSZ.
"""
import errno
import io
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_script, tiny_checkpoint

from minibert import files

REPO = Path(__file__).resolve().parent.parent
TRAIN = load_script("train.py")
LIMIT = 1 << 20  # 1 MB: room for config.json and metrics.jsonl, not for the tiny model's 3.7 MB of weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "bert", minilm_dir, positions=64)


def train_argv(tiny, data_root, out, *extra) -> list[str]:
    return ["--model", str(tiny), "--dataset", "ag_news", "--data-dir", str(data_root / "ag_news"), "--limit", "16",
            "--max-length", "16", "--batch-size", "8", "--lr", "1e-3", "--device", "cpu", "--out", str(out), *extra]


def run_train(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = TRAIN.main(list(map(str, argv)))
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err.strip()


def stopped_after_epoch_1(tiny, data_root, out, monkeypatch, capsys, *extra) -> Path:
    monkeypatch.setenv("MINIBERT_STOP_AFTER_EPOCH", "1")
    assert run_train(train_argv(tiny, data_root, out, "--epochs", "3", *extra), capsys)[0] == 0
    monkeypatch.delenv("MINIBERT_STOP_AFTER_EPOCH")
    return out


def epoch_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["epoch"]


def assert_one_line(err: str, pattern: str):
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.fullmatch(pattern, err), (pattern, err)


SIZE = r"\d+(\.\d)? [KMG]?B"


def test_a_full_disk_while_checkpointing_is_one_line_and_the_previous_checkpoint_resumes(tiny, data_root, tmp_path,
                                                                                          monkeypatch, capsys):
    out = stopped_after_epoch_1(tiny, data_root, tmp_path / "run", monkeypatch, capsys)
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # what torch.save does when the disk fills up under it
        f.write(b"\0" * 4096)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 1234") from None

    monkeypatch.setattr(torch, "save", full_disk)
    rc, _, err = run_train(train_argv(tiny, data_root, out, "--epochs", "3", "--resume"), capsys)
    assert rc == 2
    assert_one_line(err, rf"error: no room to write checkpoint\.pt in {re.escape(str(out))} \(it needs {SIZE}, {SIZE} "
                         r"free\): free some space; the previous checkpoint\.pt is intact; then rerun with --resume "
                         r"\(it continues after epoch 1\)")
    assert epoch_of(out / "checkpoint.pt") == 1 and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", save)
    rc, stdout, err = run_train(train_argv(tiny, data_root, out, "--epochs", "3", "--resume"), capsys)
    assert rc == 0 and f"resuming {out} after epoch 1" in stdout, err


def test_a_disk_without_room_for_the_model_is_refused_before_a_byte_is_written(tiny, data_root, tmp_path, monkeypatch,
                                                                               capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(files, "_free", lambda folder: 1000)  # a disk with 1000 bytes left
    rc, _, err = run_train(train_argv(tiny, data_root, out, "--epochs", "1", "--save-model"), capsys)
    assert rc == 2
    assert_one_line(err, rf"error: no room to write model\.safetensors in {re.escape(str(out / 'model'))} \(it needs "
                         rf"3\.\d MB, 1000 B free\): free some space; then rerun with --resume \(it starts again from "
                         r"epoch 1\)")
    assert list((out / "model").iterdir()) == []


def under_file_size_limit(argv) -> subprocess.CompletedProcess:
    """train.py as a child whose files may grow to LIMIT bytes (ulimit -f)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
    return subprocess.run([sys.executable, "train.py", *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit)


def test_a_file_size_limit_is_one_line_for_the_checkpoint_and_for_the_saved_model(tiny, data_root, tmp_path,
                                                                                   monkeypatch, capsys):
    out = stopped_after_epoch_1(tiny, data_root, tmp_path / "run", monkeypatch, capsys)
    child = under_file_size_limit(train_argv(tiny, data_root, out, "--epochs", "3", "--resume"))
    assert child.returncode == 2, child.stdout + child.stderr
    assert_one_line(child.stderr.strip(),
                    rf"error: no room to write checkpoint\.pt in {re.escape(str(out))} \(it needs 1\d\.\d MB, over the "
                    r"file size limit of 1\.0 MB \(ulimit -f\)\): raise the limit \(ulimit -f\); the previous "
                    r"checkpoint\.pt is intact; then rerun with --resume \(it continues after epoch 1\)")
    assert epoch_of(out / "checkpoint.pt") == 1 and not list(out.glob(".*.tmp"))
    rc, stdout, err = run_train(train_argv(tiny, data_root, out, "--epochs", "3", "--resume"), capsys)
    assert rc == 0 and f"resuming {out} after epoch 1" in stdout, err

    saved = tmp_path / "saved"  # safetensors writes the model: its error comes from Rust, "(os error 27)"
    child = under_file_size_limit(train_argv(tiny, data_root, saved, "--epochs", "1", "--save-model"))
    assert child.returncode == 2, child.stdout + child.stderr
    assert_one_line(child.stderr.strip(),
                    rf"error: no room to write model\.safetensors in {re.escape(str(saved / 'model'))} \(it needs "
                    r"3\.\d MB, over the file size limit of 1\.0 MB \(ulimit -f\)\): raise the limit \(ulimit -f\); "
                    r"then rerun with --resume \(it starts again from epoch 1\)")
    assert not list(saved.rglob(".*.tmp"))


def test_an_interrupt_during_the_checkpoint_write_stays_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while torch.save writes: torch's zip writer then fails to close ("unexpected pos"), which
    used to replace the interrupt with a RuntimeError traceback; the previous checkpoint stays intact."""
    import torch

    from minibert import Bert, BertConfig, SequenceClassifier
    from minibert.training import rundir

    clf = SequenceClassifier(Bert(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16)), 2)
    opt = torch.optim.AdamW(clf.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    progress = {"epoch": 1, "history": [], "seconds": 0, "train_tokens": 0, "train_seconds": 0}
    rngs = rundir.rng_states(torch.device("cpu"))
    rundir.save_state(tmp_path / "checkpoint.pt", clf, opt, sched, None, rngs, progress)
    before = (tmp_path / "checkpoint.pt").read_bytes()

    class Interrupted(io.FileIO):
        """A file whose third write is where the signal arrives."""
        writes = 0

        def write(self, data):
            Interrupted.writes += 1
            if Interrupted.writes == 3:
                raise KeyboardInterrupt
            return super().write(data)

    monkeypatch.setattr(rundir, "open", lambda path, mode: Interrupted(path, "w"), raising=False)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_state(tmp_path / "checkpoint.pt", clf, opt, sched, None, rngs, {**progress, "epoch": 2})
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left
