"""The report's healing section: layer-wise CKA of each corrupted fine-tuning cell against the clean cell.

    section = healing_section(Path("runs/grid"), grid, n=256, device="cpu")   # markdown; PNGs in runs/grid/healing/

Results are cached per cell in <out>/healing/<cell>.json; report.py puts the section at the end of the report.
"""
import sys
from dataclasses import replace
from pathlib import Path

from ..corrupt import layer_ranges
from ..data.datasets import DATASET_TITLES
from ..training.rundir import read_json, read_result, saved_model, write_json
from .cells import Cell, label_parts, model_label, setting_label
from .figures import cka_figure
from .layer_cka import healed, healing, layer_name
from .paper import TABLES


def healing_pairs(out: Path, grid: dict[str, Cell]) -> dict[tuple, list[tuple[Cell, Cell]]]:
    """(clean, corrupted) pairs of finished fine-tuning cells, grouped by (table, model, dataset, seed)."""
    pairs = {}
    for cell in grid.values():
        if cell.table not in TABLES or cell.level == 0 or TABLES[cell.table].mode != "finetune":
            continue  # a probe's encoder is frozen: its CKA after training is its CKA before; components: own section
        clean = replace(cell, level=0, side=None, component="all")  # the same size on a data-budget grid
        done = [read_result(out / c.name) for c in (clean, cell) if c.name in grid]
        if len(done) < 2 or not all(done):
            continue
        # with sizes, only those whose models were saved: a before column alone is no healing
        if cell.limit is not None and not (out / "healing" / f"{cell.name}.json").is_file() and \
                not all(saved_model(out / c.name, r) for c, r in zip((clean, cell), done)):
            continue
        model = model_label(cell.model, cell.limit)
        pairs.setdefault((cell.table, model, cell.dataset, cell.seed), []).append((clean, cell))
    return pairs


def cached_healing(out: Path, clean: Cell, cell: Cell, n: int, device: str, features: dict) -> dict:
    """layer_cka.healing() of one pair, cached in <out>/healing/<cell>.json (recomputed once both models are saved).
    `features` is layer_cka.healing's in-memory cache, shared by the pairs of one clean cell."""
    path = out / "healing" / f"{cell.name}.json"
    cached = read_json(path)  # None when missing or damaged (then recomputed)
    if isinstance(cached, dict):
        saved = all(saved_model(out / c.name, read_result(out / c.name)) for c in (clean, cell))
        fresh = cached.get("n_requested") == n and "floor" in cached and (cached.get("after") is not None or not saved)
        if fresh or not saved:  # without both saved models a recomputation would lose the after column
            return cached
    result = {**healing(out / clean.name, out / cell.name, n=n, device=device, cache=features), "n_requested": n}
    path.parent.mkdir(exist_ok=True)
    write_json(path, result, indent=1)
    return result


def _floor(r: dict, i: int) -> str:
    """The shuffled-rows floor of one layer: before -> after fine-tuning when both exist."""
    after = r.get("floor_after")
    return f"{r['floor'][i]:.2f}" + (f" -> {after[i]:.2f}" if after is not None else "")


def setting_name(setting: str, result: dict) -> str:
    """A cell's setting ('bottom25', '100') named by the layers it re-initialised (cells.setting_label, short):
    'bottom 2 of 6', 'all 6 layers'."""
    side = setting.rstrip("0123456789")
    level = int(setting[len(side):]) if side else 100  # a healing pair is never the clean cell
    total = len(result["layers"]) - 1  # layers[0] is the embeddings
    return setting_label(level, side, len(result["corrupted_layers"]), total, short=True)


def render_healing(key: tuple, results: dict[str, dict]) -> str:
    """A layer x setting table of CKA before -> after (and, when layer_cka.healing gave one, each setting's shuffled-rows
    floor), and one line per setting on what healed (layer_cka.healed, as `python -m minibert cka` prints it)."""
    table, model, dataset, seed = key
    first = next(iter(results.values()))
    floored = [name for name, r in results.items() if r.get("floor") is not None]
    # a floor column only where it says something: debiased CKA puts the shuffled rows at 0.00 by construction
    floors = [name for name in floored if any(abs(v) >= 0.005 for column in ("floor", "floor_after")
                                               for v in results[name].get(column) or [])]
    estimator = "Debiased linear CKA" if first.get("estimator") == "debiased" else "Linear CKA"
    floor_note = (" floor = the same CKA against the corrupted features with their rows shuffled (unrelated "
                  "examples): what CKA gives with no shared structure at this n; a value near it means no similarity."
                  if floored else " No floor: these results predate floors (delete the healing folder to recompute).")
    if floored and not floors:
        floor_note += " Every floor here is 0.00 (within 0.005, before and after), so no floor column is shown."
    names = {setting: setting_name(setting, r) for setting, r in results.items()}
    lines = [f"#### Healing: {model} on {DATASET_TITLES.get(dataset, dataset)} ({TABLES[table].title.split(':')[0]}, "
             f"seed {seed}, CKA on {first['n']:,} test examples)", "",
             f"{estimator} of each hidden state (mean-pooled over tokens) with the clean model's: before fine-tuning "
             "(corrupted vs clean pre-trained encoder) -> after (corrupted vs clean fine-tuned). * = a layer the "
             "corruption re-initialised." + floor_note, "",
             "| layer | " + " | ".join([*names.values(), *(f"floor {names[name]}" for name in floors)]) + " |",
             "|---|" + "---|" * (len(results) + len(floors))]
    for i in first["layers"]:
        entries = []
        for r in results.values():
            after = "-" if r["after"] is None else f"{r['after'][i]:.2f}"
            entries.append(f"{r['before'][i]:.2f} -> {after}{' *' if i in r['corrupted_layers'] else ''}")
        entries += [_floor(results[name], i) for name in floors]
        lines.append(f"| {layer_name(i)} | " + " | ".join(entries) + " |")
    reference = results.get("100") if results.get("100", {}).get("after") is not None else None
    if reference is not None:
        lines += ["", f"Reference: {names['100']} re-initialised, fine-tuned the same way: the CKA "
                  "that fine-tuning reaches with no pre-trained layer at all. A layer above it kept something of the "
                  "pre-training; one at it, nothing that fine-tuning from scratch would not give."]
    lines.append("")
    for name, r in results.items():
        if r["after"] is None:
            lines.append(f"- {names[name]}: no saved fine-tuned models (run the grid with --save-models) for the after "
                         "column")
            continue
        lines.append(f"- {names[name]}: {healed(r, reference if name != '100' else None)}")
    return "\n".join(lines)


def _after_mean(result: dict, layers: list[int]) -> float:
    return sum(result["after"][i] for i in layers) / len(layers)


def render_healing_by_size(key: tuple, by_size: dict[int, dict[str, dict]]) -> str:
    """Healing along the data axis: per corrupted setting, the mean CKA after fine-tuning over its re-initialised
    layers and over the others, at each training-set size, beside the all-layers-random model's over the same
    layers. key: (table, model without the size, dataset, seed); by_size: size -> render_healing's results."""
    table, model, dataset, seed = key
    sizes = sorted(by_size)
    settings = list(dict.fromkeys(s for size in sizes for s, r in by_size[size].items() if r["after"] is not None))
    if not settings:
        return ""
    lines = [f"#### Healing against task data: {model} on {DATASET_TITLES.get(dataset, dataset)} "
             f"({TABLES[table].title.split(':')[0]}, seed {seed})", "",
             "Mean CKA with the clean fine-tuned model after fine-tuning, over a setting's re-initialised layers "
             "and over its other layers, at each training-set size; in brackets the model with every layer "
             "re-initialised, fine-tuned on the same examples, over the same layers (the level fine-tuning reaches "
             "from no pre-training).", "",
             "| setting: layers | " + " | ".join(f"{n:,} examples" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for setting in settings:
        some = next(by_size[n][setting] for n in sizes if by_size[n].get(setting, {}).get("after") is not None)
        hit = some["corrupted_layers"]
        rest = [i for i in some["layers"][1:] if i not in hit]
        for what, layers in (("re-initialised", hit), ("the others", rest)):
            if not layers:
                continue
            entries = []
            for n in sizes:
                r, reference = by_size[n].get(setting), by_size[n].get("100")
                if r is None or r["after"] is None:
                    entries.append("")
                    continue
                ref = reference is not None and reference["after"] is not None and setting != "100"
                entries.append(f"{_after_mean(r, layers):.2f}" + (f" ({_after_mean(reference, layers):.2f})"
                                                                   if ref else ""))
            lines.append(f"| {setting_name(setting, some)}: {what} ({layer_ranges(layers)}) | " + " | ".join(entries)
                         + " |")
    return "\n".join(lines)


def healing_section(out: Path, grid: dict[str, Cell], n: int, device: str, plots: bool = True) -> str:
    """Markdown (and PNGs in <out>/healing/) for the lowest seed of every (table, model, dataset); on a data-budget
    grid, also one table across the sizes (render_healing_by_size)."""
    pairs = healing_pairs(out, grid)
    chosen = {}
    for key in sorted(pairs):
        chosen.setdefault(key[:3], key)  # the lowest seed of each (table, model, dataset)
    parts, by_size, failed = [], {}, []
    for key in chosen.values():
        order = sorted(pairs[key], key=lambda p: (p[1].level, p[1].side or ""))
        features, results = {}, {}
        for clean, cell in order:
            try:
                results[cell.setting] = cached_healing(out, clean, cell, n, device, features)
            except (OSError, ValueError) as e:  # one cell's missing or damaged files cost its pair, not the report
                print(f"warning: healing of {cell.name} skipped: {e}", file=sys.stderr)
                failed.append(f"- {cell.name} against {clean.name}: not analysed ({e})")
        if not results:
            continue
        if order[0][1].limit is not None:
            model = label_parts(key[1])[0]
            by_size.setdefault((key[0], model, key[2], key[3]), {})[order[0][1].limit] = results
        parts.append(render_healing(key, results))
        if plots:
            title = f"{key[1]} on {key[2]}, seed {key[3]}: CKA with the clean model (dashed before, solid after fine-tuning)"
            try:
                slug = "-".join(key[:3]).replace(" n=", "-n")  # a data-budget grid's model label: "minilm n=1000"
                named = {setting_name(setting, r): r for setting, r in results.items()}
                png = cka_figure(named, out / "healing" / f"{slug}-s{key[3]}.png", title)
                parts.append(f"\n![healing]({png.relative_to(out)})")
            except ImportError as e:
                parts.append(f"\n(no plot: {e})")
    parts += filter(None, (render_healing_by_size(key, sizes) for key, sizes in by_size.items() if len(sizes) > 1))
    if failed:
        parts.append("Pairs left out, each for the reason given (fix its files, or rerun its cell, and rerun the "
                     "report):\n\n" + "\n".join(failed))
    return "\n\n".join(parts)
