"""The report's components section (`python -m minibert grid components`, not in the paper): which parts of a layer heal.

    section = components_section(Path("runs/c"), grid, checkpoints)   # markdown; PNGs in runs/c/figures/

Per model and dataset: weighted F1 (mean over seeds) per component corrupted (rows: all = the whole layers,
attn, ffn, norm, qk) and corrupted layers (columns: bottom50, top50, ...), beside the clean cell. Two
questions, each a set of comparisons paired over seeds with findings.paired_interval (the Findings machinery):

    cheaper: does corrupting only the component cost less than corrupting the whole layers (component > all)?
    recover: does a loss remain after fine-tuning, i.e. is the clean cell better (clean > component: the
             paper's claim 1, "unable to fully recover", per component)?

Figures (lowest seed of each model and dataset): the weight change per layer over the epochs (metrics.jsonl's
drift: the corrupted group, i.e. attention for attn/qk, feed-forward for ffn, LayerNorms for norm, the whole
layer otherwise), corrupted layers solid; and when the cells saved their models, the test accuracy per hidden
state of a logistic-regression probe (probe_layers.layer_probes) on the fine-tuned encoders, beside the clean
pre-trained encoder's, on the run's own train/test examples (cached in <out>/probes/<cell>.json).
"""
from pathlib import Path

from ..corrupt import parse_spec
from ..data.datasets import DATASET_TITLES
from ..training.rundir import read_metrics, read_result
from .cells import COMPONENTS, Cell, corrupt_spec, setting
from .figures import drift_figure, layer_probe_figure
from .findings import Comparison, paired_interval, tally, verdict
from .paper import SIDES
from .probe_layers import probe_results
from .summary import layer_range, summarise

TABLE = "components"
GROUP = {"all": "layer", "attn": "attn", "qk": "attn", "ffn": "ffn", "norm": "norm"}  # drift group each corrupts
QUESTIONS = {"cheaper": "corrupting only the component costs less than corrupting the whole layers (component > all)",
             "recover": "fine-tuning does not fully recover from corrupting the component (clean > component: the "
                        "paper's claim 1, per component)"}


def component_rows(out: Path, grid: dict[str, Cell]) -> list[dict]:
    """One dict per (model, dataset, level, side, component) of the components cells: F1 over the seeds."""

    positions = {}
    for cell in grid.values():
        if cell.table == TABLE:
            positions.setdefault((cell.model, cell.dataset, cell.level, cell.side or "", cell.component), []).append(cell)
    rows = []
    for (model, dataset, level, side, component), members in sorted(positions.items()):
        s = summarise(out, members)
        rows.append({"model": model, "dataset": dataset, "level": level, "side": side, "component": component,
                     "f1": s.mean(), "text": s.text(), "by_seed": s.by_seed, "cells": members})
    return rows


def component_comparisons(rows: list[dict]) -> list[Comparison]:
    """The cheaper and recover comparisons (see the module doc) of every finished component cell."""
    at = {(r["model"], r["dataset"], r["level"], r["side"], r["component"]): r["by_seed"] for r in rows if r["by_seed"]}
    comps = []
    for model, dataset, level, side, component in at:
        if component == "all" or level == 0:
            continue
        for question, other in (("cheaper", (level, side, "all")), ("recover", (0, "", "all"))):
            if (model, dataset, *other) not in at:
                continue
            better, worse = ((level, side, component), other) if question == "cheaper" else (other, (level, side, component))
            ours, lo, hi, pairs = paired_interval(at[(model, dataset, *better)], at[(model, dataset, *worse)])
            comps.append(Comparison(claim=question, table=TABLE, model=model, dataset=dataset, better=better,
                                    worse=worse, ours=ours, lo=lo, hi=hi, pairs=pairs))
    return comps


def render_table(model: str, dataset: str, rows: list[dict], layers) -> str:
    """Rows: clean, then each component; columns: each corrupted level and side (with its layers)."""
    mine = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)]
    settings = sorted({(r["level"], r["side"]) for r in mine if r["level"]}, key=lambda k: (k[0], SIDES.index(k[1])
                                                                                         if k[1] in SIDES else -1))
    at = {(r["level"], r["side"], r["component"]): r for r in mine}
    head = [f"{setting(lv, s)} ({layers(lv, s)})" if layers(lv, s) else setting(lv, s) for lv, s in settings]
    lines = [f"### Components: {model} on {DATASET_TITLES.get(dataset, dataset)}", "",
             "| corrupted | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    clean = at.get((0, "", "all"))
    if clean is not None:
        lines.append(f"| nothing (clean) | {clean['text']} |" + " |" * (len(head) - 1))
    for component in COMPONENTS:
        entries = [at[(lv, s, component)]["text"] if (lv, s, component) in at else "" for lv, s in settings]
        name = "whole layers (all)" if component == "all" else component
        lines.append(f"| {name} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def render_answers(comps: list[Comparison]) -> str:
    """Per question and component: verdict over the model x dataset x setting cells, each cell's difference."""
    lines = []
    for question, text in QUESTIONS.items():
        lines += ["", f"**{text}**", ""]
        for component in COMPONENTS[1:]:
            mine = [c for c in comps if c.claim == question and component in (c.better[2], c.worse[2])]
            if not mine:
                continue
            t = tally(mine)
            seeds = (f"; {t['supported']} of {t['tested']} supported, {t['contradicted']} contradicted (95% paired "
                     "t-interval over seeds)" if t["tested"] else "; one seed: no interval")
            cells = "; ".join(
                f"{c.model} {DATASET_TITLES.get(c.dataset, c.dataset)} "
                f"{setting(*(c.better if question == 'cheaper' else c.worse)[:2])}: {c.ours:+.2f}"
                + (f" [{c.lo:+.2f}, {c.hi:+.2f}]" if c.lo is not None else "") for c in mine)
            lines.append(f"- {component}: {verdict(t)} ({t['held']} of {t['cells']} hold{seeds}): {cells}")
    return "\n".join(lines)


def drift_panels(out: Path, cells: list[Cell]) -> list[list]:
    """figures.drift_figure's grid for one model, dataset and seed: clean first, then a row per side, a column per
    component; each panel the drift of the group its cell corrupted, per layer, epoch 0 (= 0) first."""
    def panel(cell):
        result = read_result(out / cell.name)
        history = read_metrics(out / cell.name / (result or {}).get("run_dir", "."))
        if result is None or not history or "drift" not in history[0]:
            return None  # unfinished, or run before the drift was logged
        group = GROUP[cell.component]
        per_layer = [[0.0] + [rec["drift"][group][i] for rec in history] for i in range(len(history[0]["drift"]["layer"]))]
        hit = parse_spec(cell.corrupt, len(per_layer)).layers
        what = {"layer": "whole layer", "attn": "attention", "ffn": "feed-forward", "norm": "LayerNorms"}[group]
        return (f"{cell.setting if cell.level else 'clean'}: {what}", dict(enumerate(per_layer, 1)), hit)

    at = {(c.level, c.side or "", c.component): c for c in cells}
    clean = at.get((0, "", "all"))
    grid = [[panel(clean) if clean else None]]
    for level in sorted({lv for lv, _, _ in at if lv}):
        for side in SIDES if level != 100 else ("",):
            grid.append([panel(at[(level, side, comp)]) if (level, side, comp) in at else None for comp in COMPONENTS])
    return grid if any(p for row in grid for p in row) else []


def render_figures(out: Path, rows: list[dict], checkpoints: dict, device: str, probes: bool) -> list[str]:
    """Per model and dataset (lowest seed): the drift figure and, with saved models, the probe figure; links."""
    lines = []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        cells = [c for r in rows if (r["model"], r["dataset"]) == (model, dataset) for c in r["cells"]]
        seed = min(c.seed for c in cells)
        cells = [c for c in cells if c.seed == seed]
        name, where = f"{model}-{dataset}-s{seed}", f"{model} on {DATASET_TITLES.get(dataset, dataset)}, seed {seed}"
        try:
            if panels := drift_panels(out, cells):
                png = drift_figure(panels, out / "figures" / f"components-drift-{name}.png",
                                   f"{where}: ||W_t - W_0|| / ||W_0|| per layer since the start of fine-tuning "
                                   "(solid, * = corrupted)")
                lines += [f"![weight change per layer, {where}]({png.relative_to(out)})", ""]
            result = probe_results(out, cells, checkpoints[model], device) if probes else {}
            if len(result) > 2:  # more than the pre-trained reference and the majority
                majority, pre = result.pop("majority"), result.pop("pre-trained")
                n = len(pre) - 1
                settings = sorted({(c.level, c.side or "") for c in cells if c.level and c.side})
                panels = []
                for level, side in settings:
                    label = setting(level, side)
                    lines_ = {"pre-trained (clean, not fine-tuned)": pre, "clean, fine-tuned": result.get("clean")}
                    lines_ |= {p: result.get(label if p == "all" else f"{label}-{p}") for p in COMPONENTS}
                    panels.append((label, {k: v for k, v in lines_.items() if v is not None},
                                   parse_spec(corrupt_spec(level, side), n).layers))
                png = layer_probe_figure(panels, out / "figures" / f"components-probes-{name}.png",
                                         f"{where}: logistic-regression probes on the fine-tuned encoders", majority)
                lines += [f"![probe accuracy per layer, {where}]({png.relative_to(out)})", ""]
        except ImportError as e:
            return lines + [f"(no figures: {e})"]
    return lines


def components_section(out: Path, grid: dict[str, Cell], checkpoints: dict, device: str = "cpu",
                       probes: bool = True, plots: bool = True) -> str:
    """The markdown section (empty when the grid has no components cells); figures in <out>/figures/."""
    rows = component_rows(out, grid)
    if not rows:
        return ""
    parts = ["## Components: which parts of a layer heal", "",
             ("Weighted F1 (%) at the best epoch, fine-tuned with mean pooling, by what in the corrupted layers was "
             "re-initialised: all (the whole layers, as the paper does), attn (qkv and output projection), ffn (both "
             "feed-forward matrices), norm (the two LayerNorms), qk (the query and key rows of qkv only); columns: "
             "which layers (in brackets). Marks as in the tables: mean ± std over the seeds that did not diverge, "
             "(k div), (k col), [k/n] seeds finished.")]
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        parts += ["", render_table(model, dataset, rows,
                                   lambda lv, s, m=model: layer_range(checkpoints[m], lv, s) if s else "")]
    comps = component_comparisons(rows)
    parts += ["", "### Components: answers", "", "Each comparison is two cells of one model, dataset and setting "
              "(better - worse, F1 points, mean over seeds); with two or more seeds, a 95% paired t-interval, "
              "supported when it lies above 0 (as in Findings).\n" + (render_answers(comps) if comps else
                                                                    "\nNo finished pair of cells to compare yet.")]
    if plots:
        parts += ["", "### Components: figures", "",
                  ("Weight change per layer over the epochs: ||W_t - W_0|| / ||W_0|| of the group the cell corrupted "
                  "(whole layer, attention, feed-forward or LayerNorms), from the start of fine-tuning (after "
                  "corruption); corrupted layers solid and thick. Probes: test accuracy of a logistic regression on "
                  "each hidden state (mean-pooled) of the fine-tuned encoders, fitted on the run's train examples; "
                  "dashed grey: the clean pre-trained encoder; shaded: the corrupted layers."), "",
                  *render_figures(out, rows, checkpoints, device, probes)]
    return "\n".join(parts).rstrip() + "\n"
