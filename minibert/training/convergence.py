"""Did a run stop learning? Read from its own per-epoch metrics, so old runs can be judged like new ones.

    from minibert.training.convergence import convergence
    convergence(history, "weighted_f1", num_labels=2)   # history: metrics.jsonl's records, one per epoch
    # -> {"still_improving": False, "gain": 0.001, "train_loss_drop": 0.02, "train_loss_vs_chance": 0.04, ...}

A run is still improving when, comparing its last WINDOW epochs with the WINDOW before them (fewer in a short run:
half its epochs each), either
  - the test metric's mean rose by more than MIN_GAIN (0.5 points of weighted F1), or
  - the mean train loss fell by more than MIN_LOSS_DROP of itself while it is still above FIT_FRACTION of the
    loss of guessing (ln of the number of classes): a loss falling from 0.05 to 0.02 is a fitted model
    memorising, not one that is still learning the task.
The test metric, not the validation one, decides: the held-out 10% of a small train set moves by a whole point
per example. A run of one epoch has nothing to compare and counts as still improving.
"""
import math
import statistics

WINDOW = 3  # epochs at the end compared with the same number before them
MIN_GAIN = 0.005  # a rise of the test metric's mean above this (0.5 points) is still learning
MIN_LOSS_DROP = 0.10  # a relative fall of the mean train loss above this is still learning ...
FIT_FRACTION = 0.10  # ... while the train loss is above this fraction of the chance loss ln(classes)
THRESHOLDS = {"window": WINDOW, "min_gain": MIN_GAIN, "min_loss_drop": MIN_LOSS_DROP, "fit_fraction": FIT_FRACTION}


def convergence(history: list[dict], metric: str, num_labels: int) -> dict:
    """Whether a run was still improving when it stopped, and the numbers that say so (see the module doc)."""
    scores = [r[metric] for r in history]
    losses = [r.get("train_loss") for r in history]
    chance = math.log(num_labels)
    w = min(WINDOW, len(history) // 2)
    final_loss = losses[-1] if history and losses[-1] is not None else None
    out = {"still_improving": True, "window": w, "gain": None, "train_loss_drop": None,
           "train_loss": final_loss, "chance_loss": round(chance, 6),
           "train_loss_vs_chance": None if final_loss is None else round(final_loss / chance, 6),
           "thresholds": THRESHOLDS}
    if w == 0:
        return out  # one epoch: no plateau can have been seen
    gain = statistics.fmean(scores[-w:]) - statistics.fmean(scores[-2 * w:-w])
    out["gain"] = round(gain, 6)
    rising_loss = False
    before, after = losses[-2 * w:-w], losses[-w:]
    if None not in before and None not in after and statistics.fmean(before) > 0:
        drop = 1 - statistics.fmean(after) / statistics.fmean(before)
        out["train_loss_drop"] = round(drop, 6)
        rising_loss = drop > MIN_LOSS_DROP and final_loss > FIT_FRACTION * chance
    out["still_improving"] = gain > MIN_GAIN or rising_loss
    return out


def describe(c: dict) -> str:
    """One line for a run's summary: 'converged' or why it is still improving."""
    if not c["still_improving"]:
        return "converged"
    if c["gain"] is None:
        return "still improving? (one epoch: nothing to compare)"
    why = [f"test metric +{100 * c['gain']:.2f} points"] if c["gain"] > MIN_GAIN else []
    if c["train_loss_drop"] is not None and c["train_loss_drop"] > MIN_LOSS_DROP:
        why.append(f"train loss -{100 * c['train_loss_drop']:.0f}%")
    return f"STILL IMPROVING over its last {c['window']} epochs ({', '.join(why)}): more epochs would change it"
