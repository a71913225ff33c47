"""``masters ablate``: a grid of runs that swap components or values by name, one table at the end.

Every cell is the base config with some dotted keys replaced (``training.method=sft``,
``masker=random``, ``schedule.r_max=0.3``, ``seed=1``). All cells are validated before anything
runs. Cells whose generation settings agree share one bank (``bank_dir``), so a sweep over
``r_max``, the response mix or seeds generates each response once. A cell whose evaluation already
matches its config is not run again, in this session or a later one. Every row records the
resolved components, the stage identities and the plugin versions.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.engine.identity import stage_hash
from masters.errors import MastersError, SpecError

if TYPE_CHECKING:
    from masters.specs import RunSpec


@dataclass
class Cell:
    overrides: dict[str, Any]
    config: dict[str, Any]
    spec: RunSpec | None = None
    key: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_short(v)}" for k, v in self.overrides.items()) or "(base)"


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["training.method=masters,sft", "schedule.r_max=0,0.1"]`` -> {key: [values]} (YAML-typed).

    Keys joined by ``+`` move together (one axis, not a product): ``training.n_teacher+training.n_student=
    [8,0],[4,4],[0,8]`` gives three cells, the paper's response-mix sweep.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise MastersError(f"cannot read grid entry {item!r}", where="--grid",
                               fix="write KEY=V1,V2 (e.g. --grid training.method=masters,sft)")
        key = "+".join(k.strip() for k in key.split("+"))
        if any(not k or not all(part.strip() for part in k.split(".")) for k in key.split("+")):
            raise MastersError(f"grid key {key!r} has an empty part", where="--grid",
                               fix="write dotted keys such as training.learning_rate")
        if key in grid:
            raise MastersError(f"grid key {key!r} is given twice", where="--grid",
                               fix="give each key once, with all its values: KEY=V1,V2,V3")
        if values.count("[") + values.count("{") != values.count("]") + values.count("}"):
            raise MastersError(f"unbalanced brackets in the values of {key!r}: {values!r}", where="--grid",
                               fix="close every [ and {, e.g. training.n_teacher+training.n_student=[8,0],[4,4]")
        texts = _split_values(values)
        if any(not t for t in texts):
            raise MastersError(f"an empty value in {item!r}", where="--grid",
                               fix="remove the doubled or trailing comma")
        from masters.config import parse_yaml

        parsed = [parse_yaml(v, where=f"--grid {key}") for v in texts]
        width = len(key.split("+"))
        if width > 1:
            bad = [v for v in parsed if not isinstance(v, list) or len(v) != width]
            if bad:
                raise MastersError(f"grid entry {key!r} moves {width} keys together but got {bad[0]!r}",
                                   where="--grid", fix=f"give each value as a list of {width}, e.g. {key}=[8,0],[4,4]")
        grid[key] = parsed
    return grid


def _expand(key: str, value: Any) -> dict[str, Any]:
    """One grid axis value -> the dotted keys it sets (a ``+`` key sets several together)."""
    keys = key.split("+")
    return dict(zip(keys, value)) if len(keys) > 1 else {key: value}


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so ``schedule={name: linear, r_max: 0.3},staircase`` works."""
    out, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    out.append(current.strip())
    return out  # an empty value (a doubled or trailing comma) is refused by parse_grid


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # `masker: magnitude` shorthand becomes a mapping to go deeper
            child = {"name": child}
        node[part] = child = dict(child or {})
        node = child
    node[parts[-1]] = value


def build_cells(base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], out: Path) -> list[Cell]:
    from masters.engine.generation import generation_fields
    from masters.config import validate_run_spec

    keys = list(grid)
    cells, problems = [], []
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        overrides = {k: v for axis, value in zip(keys, values) for k, v in _expand(axis, value).items()}
        config = copy.deepcopy(dict(base))
        for k, v in overrides.items():
            set_dotted(config, k, v)
        key = stage_hash("cell", overrides)[:10]
        config["output_dir"] = str(out / "cells" / key)
        cell = Cell(overrides, config, key=key)
        try:
            # older config forms are noted once, not once per cell
            cell.spec = validate_run_spec(config, source=f"cell {cell.label}", notes=not cells and not problems)
        except SpecError as exc:
            problems.extend((f"[{cell.label}] {loc}", msg) for loc, msg in exc.problems)
            continue
        cells.append(cell)
    if problems:
        raise SpecError(problems, source="ablation grid")
    # One bank per generation identity, shared by every cell that has it.
    for cell in cells:
        if not cell.config.get("bank_dir"):
            shared = out / "banks" / stage_hash("generate", generation_fields(cell.spec))[:10]
            cell.config["bank_dir"] = str(shared)
            cell.spec = validate_run_spec(cell.config, notes=False)
    return cells


def run_grid(base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], out: str | Path, *,
             progress: bool = True, on_cell: Callable[[Cell, str], None] | None = None) -> list[Cell]:
    from masters.engine.identity import provenance
    from masters.engine.pipeline import StageLog, run_pipeline, stage_identity

    out = Path(out)
    cells = build_cells(base, grid, out)
    for index, cell in enumerate(cells):
        log = StageLog(Path(cell.spec.output_dir))
        done = log.done("evaluate", stage_identity(cell.spec, "evaluate"))
        if on_cell:
            on_cell(cell, f"{index + 1}/{len(cells)} " + ("skipped (finished earlier)" if done else "running"))
        if not done:
            run_pipeline(cell.spec, progress=progress)
        evaluation = json.loads((Path(cell.spec.output_dir) / "eval" / "student-test.json").read_text())
        stages = log.read()
        cell.result = {
            "cell": cell.key, **{f"grid.{k}": v for k, v in cell.overrides.items()},
            **{f"accuracy.{k}": v for k, v in evaluation["accuracy"].items()},
            "components": {"masker": cell.spec.masker.name, "schedule": cell.spec.schedule.name,
                           "rewards": [r.name for r in cell.spec.rewards], "objective": cell.spec.objective.name,
                           "task": cell.spec.task.name, "backend": cell.spec.backend.name,
                           "adapter_student": (cell.spec.student.adapter or {}) and cell.spec.student.adapter.name},
            "stage_identities": {k: v["identity"] for k, v in stages.items()},
            "seconds": {k: v["seconds"] for k, v in stages.items()},
            "provenance": provenance(),
        }
    write_results(cells, out)
    return cells


def summarise(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds for cells that differ only in ``seed``."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        rest = {k: v for k, v in cell.overrides.items() if k != "seed"}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(cell)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {"setting": ", ".join(f"{k}={_short(v)}" for k, v in json.loads(key).items()) or "(base)",
                               "seeds": len(members)}
        metrics = sorted({m for c in members for m in c.result if m.startswith("accuracy.")})
        for metric in metrics:
            values = [c.result[metric] for c in members if metric in c.result]
            row[f"{metric}.mean"] = statistics.fmean(values)
            row[f"{metric}.std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def write_results(cells: Sequence[Cell], out: Path) -> None:
    import io

    from masters.files import atomic_write, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", {"cells": [c.result for c in cells], "summary": summarise(cells)},
                      default=str)
    flat = [{k: v for k, v in c.result.items() if not isinstance(v, dict)} for c in cells]
    columns = sorted({k for row in flat for k in row}, key=lambda k: (not k.startswith("cell"), k))
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write(out / "results.csv", handle.getvalue())
    plot_summary(summarise(cells), out / "results.png")


def plot_summary(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({k[:-5] for r in rows for k in r if k.endswith(".mean")})
    if not metrics:
        return
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 2), 3.5))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [r.get(f"{metric}.mean", 0) for r in rows], width,
               yerr=[r.get(f"{metric}.std", 0) for r in rows], capsize=3, label=metric.split(".", 1)[1])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels([r["setting"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (test)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    from masters.files import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
