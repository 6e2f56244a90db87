"""The training loop: fine-tune or linear-probe one configuration, evaluate every epoch, keep the best.

    from minibert.training.trainer import TrainConfig, train
    result = train(TrainConfig(model="large", corrupt="top:0.5"))   # what `python train.py ...` does

A run is one directory (`out`): config.json, corruption.json, metrics.jsonl (one line per epoch), result.json, model/
with save_model, checkpoint.pt while unfinished; minibert/training/rundir.py says what each holds and writes them.
Scores are fractions in [0, 1]; printed summaries show percentages like the paper.

What the paper states (section 4): Adam, lr from {1e-5, 2e-5, 5e-5} (lr="sweep" runs all three as sub-runs
out/lr_1e-05, ... and keeps the best), 10 epochs, batch 32, evaluate after every epoch, report the best epoch's
weighted F1. What it leaves open is a named recipe (`recipe`: paper, hf-trainer or bert, each described in
minibert/training/optim.py). The best epoch (and lr) is chosen on the test set as the paper does (select_on="test"),
or on a seeded, stratified 10% of train held out for it (select_on="val"); either way the test scores are reported.
A run whose best weighted F1 is at or below the majority-class baseline is flagged `diverged` (the paper's 16.98%
outliers), so is one stopped by a NaN/inf loss; one whose best epoch predicts one class for >= 95% of the test set,
or is no more accurate than always predicting the majority, `collapsed`.

Resume: checkpoint.pt, written after each epoch, holds the whole training state (rundir.save_state).
The batch order is a pure function of (seed, epoch), so that is all a resumed run needs to end exactly
where an uninterrupted one does. MINIBERT_STOP_AFTER_EPOCH=N (or stop_after_epoch=N) stops a run after
epoch N as if it had been killed there; tests use it. Ctrl-C raises a KeyboardInterrupt whose message says
which epoch the checkpoint holds. One process at a time works in a run folder: it holds <out>/run.lock.

Multi-GPU (`torchrun --nproc_per_node=N train.py ...`): batch_size stays the global batch; each rank
takes every N-th micro-batch, DDP averages gradients, every rank evaluates every N-th test batch and the
predictions are gathered so that all ranks agree on the metrics. Rank 0 writes the files.

Reading order: train() -> sweep() -> fit() -> finetune() (-> train_epoch()) or probe() -> Run.end_epoch() (record the epoch,
keep the best, checkpoint, say why the run stops) -> finish(); the run folder's helpers come last.
"""
from __future__ import annotations  # the loops name Run, defined below them

import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_pretrained
from ..corrupt import corrupt
from ..data.encoding import batches
from ..files import OutOfSpace
from ..heads import SequenceClassifier
from . import rundir
from .config import METRICS, NOT_IDENTITY, PAPER_LRS, TrainConfig, default_out, micro_batch, validate
from .convergence import FULL_WINDOW, convergence, describe
from .device import autocast, is_main, length_multiple, to_device
from .dynamics import Dynamics
from .evaluation import evaluate, extract
from .inputs import Prepared, check_resume_compute, prepare
from .metrics import majority_baseline
from .optim import Optimiser, make_optimizer, settings

COLLAPSE_FRACTION = 0.95  # a best epoch predicting one class for this share of the test set has collapsed
LOG_EVERY = 20  # optimiser steps between the loss syncs that feed the progress bar and the NaN check
# Why a run stops before its last epoch. NONFINITE finishes it as diverged; CONVERGED (until_converged) finishes it;
# STOP_AFTER_EPOCH leaves it to --resume.
NONFINITE, CONVERGED, STOP_AFTER_EPOCH = "nonfinite", "converged", "stop_after_epoch"


# ---- a run, a sweep ----------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Run one configuration (or an lr sweep of three) and return its result.json contents."""
    cfg = validate(cfg)
    if cfg.stop_after_epoch is None and os.environ.get("MINIBERT_STOP_AFTER_EPOCH"):
        cfg = replace(cfg, stop_after_epoch=int(os.environ["MINIBERT_STOP_AFTER_EPOCH"]))
    cfg = replace(cfg, out=str(cfg.out or default_out(cfg)))
    rundir.check_writable(cfg.out)  # before the data is loaded: a bad --out fails in a second, not minutes
    if cfg.cache_dir is not None:
        rundir.check_writable(cfg.cache_dir, "--cache-dir")
    try:
        # torchrun's other ranks follow rank 0, which holds the folder for them all
        with rundir.hold(cfg.out) if is_main() else nullcontext():
            finished = rundir.check_out_dir(cfg.out, identity(cfg), cfg.resume, announce=is_main())
            if finished is not None:  # reported, not rerun (with --save-model, its model saved if it has none)
                return save_kept_model(cfg, finished) if missing_model(cfg, finished) else finished
            data = prepare(cfg)
            start_out(cfg, data)
            return sweep(cfg, data) if cfg.lr == "sweep" else fit(cfg, data)
    except KeyboardInterrupt as e:  # fit() names the epoch; before it, there is nothing to lose
        raise KeyboardInterrupt(str(e) or f"interrupted; rerun with --resume to continue {cfg.out}") from None


def sweep(cfg: TrainConfig, data: Prepared) -> dict:
    """One sub-run per lr in PAPER_LRS (the paper's lrs), keep the best by cfg.metric on the selection set."""
    out = Path(cfg.out)
    runs = {}
    for lr in PAPER_LRS:
        sub = replace(cfg, lr=lr, out=str(out / f"lr_{lr:g}"))
        runs[lr] = open_sub_run(sub, data) or fit(sub, data)
        if runs[lr]["status"] != "done":
            return runs[lr]  # stopped by the test hook: so is the sweep
    # a diverged sub-run never wins over one that learned something
    best_lr = max(runs, key=lambda lr: (not runs[lr]["diverged"], runs[lr]["selection_score"]))
    result = {**runs[best_lr], "run_dir": f"lr_{best_lr:g}", "seconds": sum(r["seconds"] for r in runs.values()),
              "sweep": {f"{lr:g}": {"best_epoch": r["best_epoch"], **r["best"], "diverged": r["diverged"],
                                    "selection_score": r["selection_score"]} for lr, r in runs.items()}}
    if data.main:
        rundir.write_json(out / rundir.RESULT, result)
    return result


def fit(cfg: TrainConfig, data: Prepared) -> dict:
    """Train one configuration at one lr in its started run folder (start_out); rundir.py says what it writes."""
    out = Path(cfg.out)
    t_start = time.time()
    clf, report = classifier(cfg, data)
    if data.main:
        rundir.write_json(out / rundir.CORRUPTION, report.to_dict())
        print(report)
    # W_0 of the drift: the corrupted pre-trained encoder, rebuilt as above on a resume (corruption is seeded)
    r = Run(cfg, data, clf, out, t_start,
            dynamics=Dynamics.start(clf, data, cfg.track_cka, cfg.seed, cfg.batch_size) if data.main else None)
    try:
        if (probe if cfg.mode == "probe" else finetune)(r) == STOP_AFTER_EPOCH:
            return {"status": "stopped", "epoch": len(r.history), "out": str(out)}
        result = finish(r, report)  # after the last epoch or a CONVERGED one, or after a NONFINITE one: then diverged
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM): the checkpoint, written atomically, is old or new, never torn
        raise KeyboardInterrupt(f"interrupted after epoch {rundir.checkpoint_epoch(out)} of {out}; "
                                "rerun with --resume") from None
    except OutOfSpace as e:  # a full disk: the files written before, the checkpoint among them, are intact
        saved = rundir.checkpoint_epoch(out)
        then = f"it continues after epoch {saved}" if saved else "it starts again from epoch 1"
        raise OutOfSpace(e.errno, f"{e}; then rerun with --resume ({then})", e.filename) from None
    if data.world > 1:
        dist.barrier()  # rank 0 has written everything before any rank returns
    return result


def classifier(cfg: TrainConfig, data: Prepared):
    """(classifier, corruption report): the pre-trained encoder, corrupted as asked, with a fresh head (drawn from
    the seeded RNG); in probe mode only the head trains."""
    torch.manual_seed(cfg.seed)
    encoder = load_pretrained(data.checkpoint)
    report = corrupt(encoder, cfg.corrupt, seed=cfg.seed)
    clf = SequenceClassifier(encoder, len(data.dataset.label_names), cfg.pooling).to(data.device)
    if cfg.mode == "probe":  # the whole HF head trains: classifier, and DistilBERT's pre_classifier
        clf.requires_grad_(False)
        for layer in (clf.pre_classifier, clf.classifier):
            if layer is not None:
                layer.requires_grad_(True)
    if cfg.pooling == "mean" and clf.encoder.pooler is not None:
        clf.encoder.pooler.requires_grad_(False)  # unused by mean pooling; DDP wants a gradient for every trainable
    return clf, report


# ---- the two loops ------------------------------------------------------------------------------

def finetune(run: Run) -> str | None:
    """Train every parameter (DDP over ranks, gradient accumulation, optional compile). Why it stopped early, or None."""
    cfg, clf, data = run.cfg, run.clf, run.data
    micro = micro_batch(cfg, data.world)
    n_micro = math.ceil(len(data.train) / micro) // data.world  # per rank; ranks need equal counts
    steps_per_epoch = math.ceil(n_micro / cfg.grad_accum)
    opt = Optimiser(*make_optimizer(cfg, clf, cfg.epochs * steps_per_epoch, data.device),
                    scaler=torch.amp.GradScaler(data.device.type, enabled=data.precision == "fp16"))  # bf16 needs none
    start = run.resume(opt.optimizer, opt.scheduler, opt.scaler)
    # device_ids=None: the batch is already on this rank's GPU, and DDP would move its host-side lengths there too
    ddp = torch.nn.parallel.DistributedDataParallel(clf, device_ids=None) if data.world > 1 else None
    # compiled: one graph per (batch size, bucketed length), so a run compiles a bounded number of them
    model = torch.compile(ddp or clf, dynamic=False) if cfg.compile else (ddp or clf)

    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        every = batches(data.train, micro, shuffle=True, seed=cfg.seed, epoch=epoch, pad_id=data.tokenizer.pad_id,
                        multiple_of=length_multiple(data.device, cfg.compile), max_length=data.max_length)
        mine = islice(every, data.rank, n_micro * data.world, data.world)  # this rank's: a pure function of (seed, epoch)
        steps = (list(islice(mine, cfg.grad_accum)) for _ in range(steps_per_epoch))  # each step's micro-batches
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                   disable=True if data.rank else None)  # None: off when stderr is not a terminal
        stats = train_epoch(run, model, ddp, opt, steps, bar, t0)

        # Evaluate: pooled features of the test set, then the head in fp32 with dropout off.
        test, val = (evaluate(clf, *extract(clf, enc, cfg.batch_size, data.device, data.precision, data.tokenizer.pad_id,
                                            data.rank, data.world, desc=name), data.world) if enc is not None else None
                     for name, enc in (("test", data.test), ("val", data.val)))
        if stop := run.end_epoch(epoch, t0, stats, test, val, (opt.optimizer, opt.scheduler, opt.scaler)):
            return stop
    return None


def train_epoch(run: Run, model, ddp, opt: Optimiser, steps, bar, t0: float) -> EpochStats:
    """One epoch: for each optimiser step, forward and backward over its micro-batches, then one step."""
    device, precision, world = run.data.device, run.data.precision, run.data.world
    run.clf.train()
    loss_sum, n_loss, tokens, nonfinite = torch.zeros((), device=device), 0, 0, False
    for step, micro_batches in enumerate(steps):
        for micro_step, batch in enumerate(micro_batches):
            b = to_device(batch, device)
            last = micro_step == len(micro_batches) - 1
            with ddp.no_sync() if ddp is not None and not last else nullcontext():  # sync grads once per step
                with autocast(device, precision):
                    logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["lengths"])
                    loss = F.cross_entropy(logits, b["labels"])
                opt.scaler.scale(loss / len(micro_batches)).backward()  # the step's gradient: the micro-batches' mean
            loss_sum += loss.detach()  # stays on the device: no sync per step
            n_loss, tokens = n_loss + 1, tokens + int(batch["lengths"].sum())  # counted on the host
        opt.step()
        bar.update()
        if (step + 1) % LOG_EVERY == 0 or step + 1 == bar.total:
            # every rank sees a NaN on any rank, and stops at the same step
            if not math.isfinite(mean := rank_mean(loss_sum / n_loss, world)):
                nonfinite = True
                break
            bar.set_postfix(loss=f"{mean:.4f}", tok_s=f"{tokens * world / (time.time() - t0):,.0f}")
    bar.close()
    return EpochStats(rank_mean(loss_sum / max(n_loss, 1), world), tokens * world, time.time() - t0,
                      opt.scheduler.get_last_lr()[0], nonfinite)


def probe(run: Run) -> str | None:
    """Linear probe: the frozen encoder sees every example once; the head trains on the cached features.

    No DDP, compile or loss scaling: every rank trains the same small head in fp32 on the same features.
    Returns why it stopped early, or None.
    """
    cfg, clf, data = run.cfg, run.clf, run.data
    t0 = time.time()
    cached = [extract(clf, enc, cfg.batch_size, data.device, data.precision, data.tokenizer.pad_id,
                      features=SequenceClassifier.frozen_features, desc=f"{name} features") if enc is not None else None
              for name, enc in (("train", data.train), ("test", data.test), ("val", data.val))]
    (train_x, train_y), test, val = cached
    steps_per_epoch = math.ceil(len(train_y) / cfg.batch_size)  # one step per batch: no memory to save
    params, optimizer, scheduler, clip = make_optimizer(cfg, clf, cfg.epochs * steps_per_epoch, data.device)
    if (start := run.resume(optimizer, scheduler)) == 0:
        run.train_tokens, run.train_seconds = int(data.train.lengths.sum()), time.time() - t0
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        clf.eval()  # frozen statistics, no dropout: the head learns from exactly the features it is tested on
        order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(len(train_y))).to(data.device)
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            rows = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(clf.trainable_head(train_x[rows]), train_y[rows])
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(loss.detach())
        train_loss = torch.stack(losses).mean().item()
        stats = EpochStats(train_loss, 0, time.time() - t0, scheduler.get_last_lr()[0], not math.isfinite(train_loss))
        test_m, val_m = (evaluate(clf, *xy, head=clf.trainable_head) if xy is not None else None
                         for xy in (test, val))
        if stop := run.end_epoch(epoch, t0, stats, test_m, val_m, (optimizer, scheduler, None)):
            return stop
    return None


# ---- per epoch: record it, keep the best, checkpoint, decide whether to go on -------------------

@dataclass
class EpochStats:
    """What an epoch's training measured, before it is evaluated."""
    train_loss: float
    tokens: int  # over all ranks
    train_seconds: float
    lr: float  # at the end of the epoch
    nonfinite: bool  # a NaN/inf loss cut the epoch short


@dataclass
class Run:
    """One run in progress: what the two loops share with the per-epoch bookkeeping."""
    cfg: TrainConfig
    data: Prepared
    clf: SequenceClassifier
    out: Path
    t_start: float = field(default_factory=time.time)
    history: list = field(default_factory=list)
    seconds: float = 0.0  # of earlier sessions of this run (resume)
    train_tokens: int = 0
    train_seconds: float = 0.0
    dynamics: Dynamics | None = None  # the start of fine-tuning: what the per-epoch drift (and CKA) measure from

    @property
    def main(self) -> bool:
        return self.data.main

    def resume(self, optimizer, scheduler, scaler=None) -> int:
        """Load checkpoint.pt if there is one; returns the epoch to start from."""
        path = self.out / rundir.CHECKPOINT
        if not path.is_file():
            return 0
        rundir.check_checkpoint(path)  # another run's checkpoint, copied in, is refused
        p = rundir.load_state(path, self.clf, optimizer, scheduler, scaler, self.data.device, self.data.rank)
        self.history, self.seconds = p["history"], p["seconds"]
        self.train_tokens, self.train_seconds = p["train_tokens"], p["train_seconds"]
        if self.main:
            print(f"resuming {self.out} after epoch {p['epoch']}")
        return p["epoch"]

    def end_epoch(self, epoch: int, t0: float, stats: EpochStats, test: dict, val: dict | None, state) -> str | None:
        """After an evaluated epoch: record it, keep its model if best, checkpoint. Why the run stops here, or None.

        state: (optimizer, scheduler, scaler) for the checkpoint.
        """
        record = self.record(epoch, time.time() - t0, stats, test, val)
        is_best = self.best() is record
        if self.main:
            if self.cfg.save_model and is_best and not stats.nonfinite:
                rundir.save_model(self.clf, self.out / rundir.MODEL, self.data)
            rundir.write_jsonl(self.out / rundir.METRICS, self.history)
            self.say(record, stats, test, is_best)
        stop = self.stop_reason(epoch + 1, stats.nonfinite)
        if stop == NONFINITE:  # its weights are not worth resuming from: no checkpoint
            if self.main:
                print(f"error: non-finite training loss in epoch {epoch + 1}; stopping this run and marking it "
                      "diverged (lower the lr, or use --precision bf16/fp32 instead of fp16)", file=sys.stderr)
            return stop
        self.checkpoint(epoch + 1, state, last=stop == CONVERGED)
        if stop == STOP_AFTER_EPOCH and self.main:
            print(f"stopped after epoch {epoch + 1} (stop_after_epoch); continue with --resume")
        if stop == CONVERGED and self.main:
            print(f"stopped after epoch {epoch + 1} of at most {self.cfg.epochs}: no longer improving (--until-converged)")
        return stop

    def record(self, epoch: int, seconds: float, stats: EpochStats, test: dict, val: dict | None) -> dict:
        """Append the epoch's line of metrics.jsonl to the history, and count its tokens and training time."""
        record = {"epoch": epoch + 1, **{k: test[k] for k in (*METRICS, "loss")},
                  "top_class_fraction": top_class_fraction(test["preds"]),
                  "train_loss": stats.train_loss if math.isfinite(stats.train_loss) else None,
                  "lr": stats.lr, "seconds": round(seconds, 3),
                  "tokens_per_s": round(stats.tokens / max(seconds, 1e-9), 1)}
        if val is not None:
            record.update({f"val_{k}": val[k] for k in (*METRICS, "loss")})
        if stats.nonfinite:
            record["nonfinite_loss"] = True
        if self.main and self.dynamics is not None:
            record.update(self.dynamics.measure(self.clf))
        self.history.append(record)
        self.train_seconds += stats.train_seconds
        self.train_tokens += stats.tokens
        return record

    def score(self, record: dict) -> float:
        """What chooses the best epoch: cfg.metric on the test set (the paper's way) or on the held-out val."""
        return record[("val_" if self.cfg.select_on == "val" else "") + self.cfg.metric]

    def best(self) -> dict:
        return max(self.history, key=self.score)  # ties: the earliest epoch

    def say(self, record: dict, stats: EpochStats, test: dict, is_best: bool) -> None:
        """The epoch's one line on stdout."""
        loss = test["loss"] if test["loss"] is None else round(test["loss"], 4)
        print(f"epoch {record['epoch']}/{self.cfg.epochs} | train loss {stats.train_loss:.4f} | test weighted F1 "
              f"{100 * test['weighted_f1']:.2f} macro F1 {100 * test['macro_f1']:.2f} acc {100 * test['accuracy']:.2f} "
              f"loss {loss} | {record['tokens_per_s']:,.0f} tok/s | {record['seconds']:.1f}s{' | best' if is_best else ''}",
              flush=True)

    def stop_reason(self, done: int, nonfinite: bool) -> str | None:
        """Why the run stops after `done` epochs: NONFINITE, CONVERGED or STOP_AFTER_EPOCH (not after the last), or
        None. Every rank holds the same history, so every rank gives the same answer."""
        if nonfinite:
            return NONFINITE
        if done == self.cfg.epochs:
            return None
        # from FULL_WINDOW on: a short run's halves are a weaker test than the flag's full window
        if self.cfg.until_converged and done >= FULL_WINDOW and not self.converged()["still_improving"]:
            return CONVERGED
        return STOP_AFTER_EPOCH if self.cfg.stop_after_epoch == done else None

    def converged(self) -> dict:
        """convergence.py's flag on the epochs so far (never the test metric)."""
        return convergence(self.history, self.cfg.metric, len(self.data.dataset.label_names),
                           len(self.data.val) if self.data.val is not None else None)

    def checkpoint(self, done: int, state, last: bool = False) -> None:
        """checkpoint.pt after `done` epochs; after the last (or a `last` one: the run stops there) only with
        keep_checkpoint (result.json then counts)."""
        if (last or done == self.cfg.epochs) and not self.cfg.keep_checkpoint:
            return
        rngs = rundir.rng_states(self.data.device, self.data.world)  # every rank's, gathered on every rank
        if self.main:
            rundir.save_state(self.out / rundir.CHECKPOINT, self.clf, *state, rngs,
                       {"epoch": done, "history": self.history, "seconds": self.seconds + time.time() - self.t_start,
                        "train_tokens": self.train_tokens, "train_seconds": self.train_seconds,
                        "identity": rundir.identity_of(self.out, NOT_IDENTITY)})


def rank_mean(value: torch.Tensor, world: int) -> float:
    """The mean of a 0-dim tensor over the torchrun ranks (itself with one process), on the host: a sync."""
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)  # summed over the ranks
        value /= world
    return value.item()


def top_class_fraction(preds) -> float:
    """Share of the examples given the most frequent predicted class (1.0: the model predicts one class)."""
    return float(np.bincount(np.asarray(preds)).max() / max(len(preds), 1)) if len(preds) else 0.0


# ---- the end of a run ---------------------------------------------------------------------------

def finish(r: Run, report) -> dict:
    """result.json of a finished run: the best epoch, baselines and the diverged / collapsed flags."""
    cfg, data, out = r.cfg, r.data, r.out
    best = r.best()
    majority = majority_baseline(data.train.labels, data.test.labels)
    reason = None
    if r.history[-1].get("nonfinite_loss"):
        reason = f"non-finite training loss in epoch {r.history[-1]['epoch']}"
    elif best["weighted_f1"] <= majority["weighted_f1"]:
        reason = "best weighted F1 at or below the majority-class baseline"
    collapsed = best["top_class_fraction"] >= COLLAPSE_FRACTION or best["accuracy"] <= majority["accuracy"]
    converged = r.converged()
    result = {"status": "done", "best_epoch": best["epoch"], "best": {k: best[k] for k in (*METRICS, "loss")},
              "selection_score": r.score(best), "select_on": cfg.select_on,
              "majority_f1": majority["weighted_f1"], "majority": majority, "majority_accuracy": majority["accuracy"],
              "diverged": reason is not None, "diverged_reason": reason,
              "collapsed": collapsed, "top_class_fraction": best["top_class_fraction"],
              "lr": cfg.lr, "recipe": cfg.recipe, "recipe_settings": asdict(settings(cfg)),
              "epochs_run": len(r.history), "metric": cfg.metric, "convergence": converged,
              "num_train": len(data.train), "num_test": len(data.test),
              "num_val": len(data.val) if data.val is not None else None,
              "seconds": round(r.seconds + time.time() - r.t_start, 2),
              "tokens_per_s": round(r.train_tokens / max(r.train_seconds, 1e-9), 1),
              "model": cfg.model, "dataset": cfg.dataset, "corrupt": cfg.corrupt, "mode": cfg.mode,
              "pooling": cfg.pooling, "seed": cfg.seed, "corruption": report.to_dict(),
              "model_dir": str(out / rundir.MODEL) if cfg.save_model else None}
    if r.main:
        rundir.write_json(out / rundir.RESULT, result)
        if not cfg.keep_checkpoint:
            (out / rundir.CHECKPOINT).unlink(missing_ok=True)
        flags = (" DIVERGED: " + reason if reason else "") + (" COLLAPSED" if collapsed else "")
        print(f"best epoch {best['epoch']}: weighted F1 {100 * best['weighted_f1']:.2f} (majority baseline "
              f"{100 * majority['weighted_f1']:.2f}){flags}; {describe(converged)} -> {out / rundir.RESULT}")
    return result


# ---- the run folder -----------------------------------------------------------------------------

def identity(cfg: TrainConfig) -> dict:
    """The arguments that define what a run computes: an existing run folder must match them."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_IDENTITY}


def start_out(cfg: TrainConfig, data: Prepared) -> None:
    """After every rank has checked the run folder (check_out_dir): on a resume, the same precision; then rank 0
    creates the folder and its config.json."""
    if (Path(cfg.out) / rundir.CHECKPOINT).is_file():
        check_resume_compute(rundir.read_config(cfg.out, resolve=False), data, cfg.out)
    if data.world > 1:
        dist.barrier()  # every rank has looked at the folder before rank 0 writes into it
    if data.main:
        rundir.start_out_dir(cfg.out, rundir.run_info(cfg, data))


def open_sub_run(cfg: TrainConfig, data: Prepared) -> dict | None:
    """A sweep's sub-run folder: checked and started as train() does its own; the result of a finished one."""
    finished = rundir.check_out_dir(cfg.out, identity(cfg), cfg.resume, announce=data.main)
    if finished is None:
        start_out(cfg, data)
    elif missing_model(cfg, finished):
        save_kept_model(cfg, finished, data)
    return finished


# ---- --save-model on a finished run that saved none ---------------------------------------------

def missing_model(cfg: TrainConfig, finished: dict) -> bool:
    """--save-model asked of a finished run that saved no model."""
    return cfg.save_model and rundir.saved_model(cfg.out, finished) is None


def kept_checkpoint(cfg: TrainConfig, finished: dict) -> Path:
    """checkpoint.pt of a finished run that kept it (--keep-checkpoint) with the best epoch last: its best model.

    Otherwise the best epoch's weights are gone, and a ValueError says how to get a saved model."""
    path = Path(cfg.out) / finished.get("run_dir", ".") / rundir.CHECKPOINT
    if not (path.is_file() and finished["best_epoch"] == finished.get("epochs_run")):
        raise ValueError(f"--save-model: {cfg.out} is finished and saved no model, and no checkpoint.pt holds its "
                         f"best epoch ({finished['best_epoch']}); train it again with --save-model into a new --out")
    return path


def save_kept_model(cfg: TrainConfig, finished: dict, data: Prepared | None = None) -> dict:
    """Save the best epoch of a finished run from the checkpoint it kept, or refuse before loading any data (`data`:
    a sweep's, already prepared). Returns the run's result."""
    path = kept_checkpoint(cfg, finished)
    data = data or prepare(cfg)
    if not data.main:
        return finished
    rundir.check_checkpoint(path)
    clf = SequenceClassifier(load_pretrained(data.checkpoint), len(data.dataset.label_names), cfg.pooling)
    if rundir.load_model_state(path, clf) != finished["best_epoch"]:  # a diverged last epoch is never checkpointed
        raise ValueError(f"--save-model: {path} does not hold the best epoch ({finished['best_epoch']}) of "
                         f"{cfg.out}; train it again with --save-model into a new --out")
    rundir.save_model(clf, path.parent / rundir.MODEL, data)
    updated = {}
    for result_dir in {Path(cfg.out), path.parent}:  # a sweep's and its best sub-run's result.json
        updated[result_dir] = {**rundir.read_result(result_dir), "model_dir": str(path.parent / rundir.MODEL)}
        rundir.write_json(result_dir / rundir.RESULT, updated[result_dir])
    print(f"saved its best epoch ({finished['best_epoch']}) from {path} -> {path.parent / rundir.MODEL}")
    return updated[Path(cfg.out)]
