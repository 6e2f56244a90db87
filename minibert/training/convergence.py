"""Did a run stop learning? Read from its own per-epoch metrics, never from the test set, so old runs can be
judged like new ones and the test set never decides which runs count.

    from minibert.training.convergence import convergence
    convergence(history, "weighted_f1", num_labels=2, num_val=100)   # history: metrics.jsonl's records
    # -> {"still_improving": False, "basis": "validation", "gain": 0.004, "gain_examples": 0.33, "gain_t": 0.7, ...}

A run is still improving when, comparing its last WINDOW epochs with the WINDOW before them (fewer in a short run:
half its epochs each), either
  - the validation metric (metrics.jsonl's val_<metric>, there when the run holds out part of its training examples
    to choose its epoch: --select-on val) rose, and by more than all three of
      MIN_GAIN (0.5 points of weighted F1),
      one validation example: the validation accuracy's mean rose by more than 1 / num_val (a smaller rise is one
        borderline example flipping; weighted F1 is not a count, so the examples are read off the accuracy), and
      the noise between epochs: the rise over its standard error (the spread of the metric within the two windows,
        pooled) is above T_RISE, Student's one-sided 95% quantile (a validation set of 25 to 100 examples moves by
        whole points from one epoch to the next with nothing learnt), or
  - the mean train loss fell by more than MIN_LOSS_DROP of itself while it is still above FIT_FRACTION of the
    loss of guessing (ln of the number of classes): a loss falling from 0.05 to 0.02 is a fitted model
    memorising, not one that is still learning the task.
A run without a validation metric (--select-on test, the paper's way) is judged by its train loss alone ("basis":
"train loss"), and so more strictly: nothing shows a plateau of the metric it is chosen on, and a train loss that
falls slowly is no sign of one (2-epoch SST-2 runs whose test F1 rose 20 to 28 points lost only 6-9% of their train
loss), so it is still improving until its train loss is below FIT_FRACTION of chance and has stopped falling.
A run of one epoch has nothing to compare and counts as still improving.
"""
import math
import statistics

WINDOW = 3  # epochs at the end compared with the same number before them
FULL_WINDOW = 2 * WINDOW  # epochs the flag needs at its full strength (train --until-converged stops no earlier)
MIN_GAIN = 0.005  # a rise of the validation metric's mean above this (0.5 points) ...
MIN_EXAMPLES = 1  # ... and above this many validation examples (read off the validation accuracy) ...
T_RISE = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132}  # ... and above the noise: t(0.95, df), df = 2 * window - 2
MIN_LOSS_DROP = 0.10  # a relative fall of the mean train loss above this is still learning ...
FIT_FRACTION = 0.10  # ... while the train loss is above this fraction of the chance loss ln(classes)
THRESHOLDS = {"window": WINDOW, "min_gain": MIN_GAIN, "min_examples": MIN_EXAMPLES, "t_rise": "t(0.95, 2*window-2)",
              "min_loss_drop": MIN_LOSS_DROP, "fit_fraction": FIT_FRACTION}


def convergence(history: list[dict], metric: str, num_labels: int, num_val: int | None = None) -> dict:
    """Whether a run was still improving when it stopped, and the numbers that say so (see the module doc).
    Reads val_<metric>, val_accuracy and train_loss of each record; never the test metrics."""
    key = f"val_{metric}"
    scores = [r[key] for r in history] if history and all(r.get(key) is not None for r in history) else None
    losses = [r.get("train_loss") for r in history]
    chance = math.log(num_labels)
    w = min(WINDOW, len(history) // 2)
    final_loss = losses[-1] if history and losses[-1] is not None else None
    out = {"still_improving": True, "basis": "validation" if scores else "train loss", "window": w, "gain": None,
           "gain_examples": None, "gain_t": None, "train_loss_drop": None, "train_loss": final_loss,
           "chance_loss": round(chance, 6),
           "train_loss_vs_chance": None if final_loss is None else round(final_loss / chance, 6),
           "thresholds": THRESHOLDS}
    if w == 0:
        return out  # one epoch: no plateau can have been seen
    rising_metric = False
    if scores:
        before, after = scores[-2 * w:-w], scores[-w:]
        gain = statistics.fmean(after) - statistics.fmean(before)
        out["gain"] = round(gain, 6)
        rising_metric = gain > MIN_GAIN
        accuracy = [r.get("val_accuracy") for r in history[-2 * w:]]
        if num_val and None not in accuracy:
            examples = num_val * (statistics.fmean(accuracy[-w:]) - statistics.fmean(accuracy[:w]))
            out["gain_examples"] = round(examples, 3)
            rising_metric = rising_metric and examples > MIN_EXAMPLES + 1e-9  # float noise: exactly one is not more
        if w > 1:
            spread = math.sqrt((statistics.variance(before) + statistics.variance(after)) / 2)
            t = gain / (spread * math.sqrt(2 / w)) if spread > 0 else (math.inf if gain > 0 else 0.0)
            out["gain_t"] = round(t, 3) if math.isfinite(t) else "inf"
            rising_metric = rising_metric and t > T_RISE[2 * w - 2]
    rising_loss = False
    before, after = losses[-2 * w:-w], losses[-w:]
    if None not in before and None not in after and statistics.fmean(before) > 0:
        drop = 1 - statistics.fmean(after) / statistics.fmean(before)
        out["train_loss_drop"] = round(drop, 6)
        unfit = final_loss > FIT_FRACTION * chance
        # without a validation metric nothing shows a plateau of what the run is chosen on: only a fitted model counts
        rising_loss = unfit and (drop > MIN_LOSS_DROP or not scores)
    out.update(still_improving=rising_metric or rising_loss, metric_rising=rising_metric, loss_falling=rising_loss)
    return out


def describe(c: dict) -> str:
    """One line for a run's summary: 'converged' or why it is still improving."""
    if not c["still_improving"]:
        return "converged" + (" (train loss only: no validation set)" if c.get("basis") == "train loss" else "")
    if c["train_loss_drop"] is None and c["gain"] is None:
        return "still improving? (one epoch: nothing to compare)"
    why = []
    if c.get("metric_rising"):
        examples = f", {c['gain_examples']:g} examples" if c.get("gain_examples") is not None else ""
        why.append(f"validation metric +{100 * c['gain']:.2f} points{examples}")
    if c.get("loss_falling"):
        why.append(f"train loss -{100 * c['train_loss_drop']:.0f}%")
    return f"STILL IMPROVING over its last {c['window']} epochs ({', '.join(why)}): more epochs would change it"
