"""The shapes_reason study's phases, in order, each resumable (``quality_reason.py`` calls ``run_study``).

1. prepare (worker 0): the all-levels bank (0..0.5, magnitude, the base student's responses
   too) and the entropy-matched temperatures of the temperature control (validation only);
2. grid: every arm x learning rate x seed (x delta / tau), scored on 1000 validation questions;
3. choose: per arm the setting with the best mean validation accuracy over the seeds; the primary
   bounded objective the best of them; then the primary's own arms (faithfulness, r_max sweep);
4. test: the chosen setting's seeds of every arm on the 1024 test questions, and the sweeps;
5. report: ``benchmarks/results/shapes_reason_study.{md,json,png}``, partial until every cell is in.

The pre-registered arm ``control_temperature`` still carries the note that its temperature was not
in the engine when the study was registered (the note is part of the hashed config): it is now,
as the ``temperature`` masker (``masters.masking.tempered``), with ``T_r`` from
``masters.engine.temperature_match`` on the validation split.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import reason_study as rs

TEMPERATURE_QUESTIONS = 512


def label(args: Any) -> str:
    """The study's name in its result files (``<label>_cells/``, ``<label>_study.md``, ``<label>_probe.json``):
    ``shapes_reason`` for the main study, another for a replicate run by the same phases."""
    return getattr(args, "label", None) or "shapes_reason"


def ledger_of(args: Any) -> Path:
    return Path(args.results) / f"{label(args)}_cells"


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def prepare(out: Path, base: Mapping[str, Any], study: Mapping[str, Any]) -> dict[str, Any]:
    """The shared all-levels bank and the temperature table; ``OUT/prepared.json`` marks them done."""
    import copy

    from masters.config import validate_run_spec
    from masters.engine.pipeline import run_pipeline
    from masters.engine.temperature_match import match_temperatures
    from masters.files import atomic_write_json

    marker = out / "prepared.json"
    if marker.exists():
        return json.loads(marker.read_text())
    d = study["distill"]
    began = time.perf_counter()
    config = copy.deepcopy(dict(base))
    config["schedule"] = {**config["schedule"], "r_max": d["bank_r_max"]}
    config["output_dir"] = str(out / "bank-run")
    _say(f"bank: every level 0..{d['bank_r_max']} for {d['n_train']} questions")
    run_pipeline(validate_run_spec(config, source="study bank"), stages=["generate", "score"], progress=False,
                 on_stage=lambda stage, state: _say(f"  bank {stage}: {state}"))
    bank_s = time.perf_counter() - began
    spec = validate_run_spec(dict(base), source="study base")
    step, r_max = float(base["schedule"]["step"]), float(base["schedule"]["r_max"])
    levels = [round(step * k, 4) for k in range(1, int(round(r_max / step)) + 1)]
    _say(f"temperatures: entropy-matched at levels {levels} on {TEMPERATURE_QUESTIONS} validation questions")
    table = match_temperatures(spec, levels, n=TEMPERATURE_QUESTIONS)
    for row in table.rows:
        _say(f"  level {row['level']:.2f}: masked entropy {row['entropy']:.4f} -> T {row['temperature']:.4f}")
    record = {"bank_seconds": round(bank_s, 1), "temperature_table": table.to_dict(),
              "seconds": round(time.perf_counter() - began, 1)}
    atomic_write_json(marker, record)
    return record


def _grid_cells(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cells if c["phase"] == "grid"]


def validation_table(ledger: Path, cells: Sequence[dict[str, Any]], n_val: int) -> dict[str, dict[str, Any]]:
    """arm -> setting -> mean/SE of validation accuracy over the seeds finished so far."""
    table: dict[str, dict[str, list[float]]] = {}
    for cell in cells:
        path = rs.ledger_path(ledger, cell, "validation", n_val)
        if path.exists():
            acc = json.loads(path.read_text())["accuracy"][rs.ACCURACY]
            table.setdefault(cell["arm"], {}).setdefault(rs.setting_of(cell), []).append(acc)
    return {arm: {s: rs.mean_se(v) for s, v in settings.items()} for arm, settings in table.items()}


def selection(ledger: Path, grid: Sequence[dict[str, Any]], arms: Mapping[str, Any], bounded: Sequence[str],
              n_val: int, n_seeds: int) -> dict[str, Any]:
    """Each arm's chosen setting (validation only) and the primary bounded objective, as far as known."""
    val = validation_table(ledger, grid, n_val)
    expected: dict[str, set[str]] = {}
    for cell in grid:
        expected.setdefault(cell["arm"], set()).add(rs.setting_of(cell))
    chosen = {}
    for arm, settings in expected.items():
        have = val.get(arm, {})
        if set(have) == settings:
            pick = rs.choose(have, n_seeds)
            if pick is not None:
                chosen[arm] = pick
    bounded_arms = [a for a, d in arms.items() if d.get("bounded") in bounded]
    primary = None
    if all(a in chosen for a in bounded_arms):
        best = max(bounded_arms, key=lambda a: val[a][chosen[a]]["mean"])
        objective = dict(arms[best]["objective"])
        cell = next(c for c in grid if c["arm"] == best and rs.setting_of(c) == chosen[best])
        for key, value in objective.items():
            if value == "DELTA":
                objective[key] = cell["advantage_shift"]
        primary = {"arm": best, "bounded": arms[best]["bounded"], "objective": objective,
                   "validation": val[best][chosen[best]]["mean"]}
    return {"validation": val, "chosen": chosen, "primary": primary}


def chosen_cells(grid: Sequence[dict[str, Any]], chosen: Mapping[str, str]) -> list[dict[str, Any]]:
    return [c for c in grid if chosen.get(c["arm"]) == rs.setting_of(c)]


def with_choice(cell: Mapping[str, Any], arm: str, sel: Mapping[str, Any], grid: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A sweep cell of ``arm`` carrying the arm's other chosen values (delta, tau) besides the learning rate."""
    chosen = next(c for c in grid if c["arm"] == arm and rs.setting_of(c) == sel["chosen"][arm])
    extra = {k: v for k, v in chosen.items() if k not in ("arm", "lr", "seed", "phase")}
    return {**cell, **extra, "arm": arm}


def lr_of(chosen: Mapping[str, str], grid: Sequence[dict[str, Any]], arm: str) -> float | None:
    if arm not in chosen:
        return None
    return next(c["lr"] for c in grid if c["arm"] == arm and rs.setting_of(c) == chosen[arm])


def run_study(args: Any, *, study: Mapping[str, Any], arms: Mapping[str, Any], cells: Sequence[dict[str, Any]],
              bounded: Sequence[str], priority: Callable[[dict[str, Any]], Any], r_max: float, prereg: str,
              config_hash: str, extend: Callable[[Mapping[str, Any]], list[str]] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    from masters.config import validate_run_spec
    from masters.data import load_splits

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    rs.threads()
    out, models = Path(args.out), Path(args.models)
    ledger = ledger_of(args)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.hours * 3600 if args.hours else None
    base = rs.base_config(study, out, models, r_max)
    n_val, n_test, n_seeds = study["n_validation_eval"], study["n_test_eval"], len(study["seeds"])
    grid = _grid_cells(cells)
    if args.report:
        return write_report(args, out, study, arms, cells, bounded, r_max, prereg, config_hash, extend)
    if study.get("models_sha256"):
        rs.check_models(models, study["models_sha256"])
    worker0 = args.worker.split("/")[0] == "0"
    if worker0:
        prepared = prepare(out, base, study)
    else:
        rs.wait_for(out / "prepared.json", _say)
        prepared = json.loads((out / "prepared.json").read_text())
    temperatures = prepared["temperature_table"]["temperatures"]
    splits = load_splits(validate_run_spec(dict(base)).task)
    validation, test = list(splits["validation"])[:n_val], list(splits["test"])[:n_test]

    def out_of_time() -> bool:
        return deadline is not None and time.time() > deadline

    def one(cell: dict[str, Any], split: str, samples: Sequence[Any], **context: Any) -> bool:
        if out_of_time():
            return False
        config = rs.cell_config(arms, base, cell, out, models, temperatures=temperatures, **context)
        path = rs.ledger_path(ledger, cell, split, len(samples))
        if not path.exists():
            began = time.perf_counter()
            rs.run_cell(config, _say)
            record = rs.evaluate_cell(config, split, samples, path)
            _say(f"{cell['arm']} {rs.cell_name(cell)}: {split} {record['accuracy'][rs.ACCURACY]:.3f} "
                 f"({time.perf_counter() - began:.0f} s)")
        return True

    def wave(items: Sequence[tuple[dict[str, Any], str, dict[str, Any]]]) -> bool:
        """This worker's share of the items, then a wait for the other workers' (a barrier through the
        ledger), so that every worker chooses from the same finished cells. False when out of time."""
        for cell, split, context in rs.worker_share(list(items), args.worker):
            if not one(cell, split, validation if split == "validation" else test, **context):
                return False
        paths = [rs.ledger_path(ledger, c, split, n_val if split == "validation" else n_test)
                 for c, split, _ in items]
        while not all(p.exists() for p in paths):
            if out_of_time():
                return False
            time.sleep(10)
        return True

    def chosen_tests(sel: Mapping[str, Any], among: set[str]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        return [(c, "test", {"primary": sel["primary"]}) for c in chosen_cells(grid, sel["chosen"]) if c["arm"] in among]

    def sweeps(sel: Mapping[str, Any], phase: str) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        items = []
        for cell in cells:
            if cell["phase"] != phase:
                continue
            arm = sel["primary"]["arm"] if cell["arm"] == "PRIMARY" and sel["primary"] else cell["arm"]
            lr = lr_of(sel["chosen"], grid, arm)
            if lr is not None and arm in arms:
                items.append((with_choice(cell, arm, sel, grid), "test", {"primary": sel["primary"], "chosen_lr": lr}))
        return items

    # The verdict's path first (the pre-registered criteria need only these), then the rest; the order
    # changes no result (every cell is its own seeded run), only what a study cut short has.
    # 1. the never-cut arms and the bounded objectives on validation
    critical = {a for a in study["never_cut"] if a in arms} | {a for a, d in arms.items() if d.get("bounded")}
    first = sorted((c for c in grid if c["arm"] in critical), key=priority)
    if not wave([(c, "validation", {}) for c in first]):
        return _stop(args, worker0, out, study, arms, cells, bounded, r_max, prereg, config_hash, extend)
    # 2. the choice per arm and of the primary; the test at the chosen settings; the r_max sweeps
    sel = selection(ledger, grid, arms, bounded, n_val, n_seeds)
    for items in (chosen_tests(sel, critical), sweeps(sel, "rmax")):
        if not wave(items):
            return _stop(args, worker0, out, study, arms, cells, bounded, r_max, prereg, config_hash, extend)
    # 3. the other arms (the primary's faithfulness arm among them), their tests, the mix sweep
    rest = sorted((c for c in grid if c["arm"] not in critical), key=priority)
    items = [(c, "validation", {"primary": sel["primary"]}) for c in rest
             if sel["primary"] is not None or arms[c["arm"]]["objective"] != "PRIMARY"]
    if not wave(items):
        return _stop(args, worker0, out, study, arms, cells, bounded, r_max, prereg, config_hash, extend)
    sel = selection(ledger, grid, arms, bounded, n_val, n_seeds)
    for items in (chosen_tests(sel, set(arms) - critical), sweeps(sel, "mix")):
        if not wave(items):
            return _stop(args, worker0, out, study, arms, cells, bounded, r_max, prereg, config_hash, extend)
    if worker0:
        write_report(args, out, study, arms, cells, bounded, r_max, prereg, config_hash, extend)
    return 0


def _stop(args: Any, worker0: bool, *report_args: Any) -> int:
    _say("out of time (--hours): stopping before the next cell; rerun to go on")
    if worker0:
        write_report(args, *report_args)
    return 0


# =============================================================================================
# The report
# =============================================================================================


def _test_stats(ledger: Path, cells: Sequence[dict[str, Any]], n_test: int,
                key: str = rs.ACCURACY) -> dict[str, Any]:
    values = []
    for cell in cells:
        path = rs.ledger_path(ledger, cell, "test", n_test)
        if path.exists():
            values.append(json.loads(path.read_text())["accuracy"].get(key, float("nan")))
    return rs.mean_se(values)


def collect(ledger: Path, study: Mapping[str, Any], arms: Mapping[str, Any], cells: Sequence[dict[str, Any]],
            bounded: Sequence[str]) -> dict[str, Any]:
    grid = _grid_cells(cells)
    n_val, n_test, n_seeds = study["n_validation_eval"], study["n_test_eval"], len(study["seeds"])
    sel = selection(ledger, grid, arms, bounded, n_val, n_seeds)
    test, faith = {}, {}
    for arm, setting in sel["chosen"].items():
        members = [c for c in grid if c["arm"] == arm and rs.setting_of(c) == setting]
        test[arm] = _test_stats(ledger, members, n_test)
        faith[arm] = _test_stats(ledger, members, n_test, rs.FAITHFULNESS)
    primary_arm = sel["primary"]["arm"] if sel["primary"] else None
    rmax: dict[str, dict[float, Any]] = {}
    mix: dict[str, Any] = {}
    for cell in cells:
        if cell["phase"] == "grid":
            continue
        arm = primary_arm if cell["arm"] == "PRIMARY" else cell["arm"]
        if arm is None:
            continue
        label = "PRIMARY" if cell["arm"] == "PRIMARY" else arm
        if cell["phase"] == "rmax":
            rmax.setdefault(label, {})[cell["r_max"]] = None
        else:
            mix[f"{cell['mix'][0]}+{cell['mix'][1]}"] = None
    for label, points in rmax.items():
        arm = primary_arm if label == "PRIMARY" else label
        for r in points:
            members = [with_choice(c, arm, sel, grid) for c in cells
                       if c["phase"] == "rmax" and c["arm"] == label and c["r_max"] == r]
            points[r] = _test_stats(ledger, members, n_test)
    for key in mix:
        members = [c for c in cells if c["phase"] == "mix" and f"{c['mix'][0]}+{c['mix'][1]}" == key]
        mix[key] = _test_stats(ledger, members, n_test)
    if "masters_paper" in test and mix:
        mix.setdefault("4+4", test["masters_paper"])
    done = {phase: sum(1 for c in cells if c["phase"] == phase and _finished(ledger, c, n_val, n_test, primary_arm, sel, grid))
            for phase in ("grid", "rmax", "mix")}
    total = {phase: sum(1 for c in cells if c["phase"] == phase) for phase in done}
    primary = test.get(primary_arm) if primary_arm else None
    holm_rows = {}
    if "masters_paper" in test:
        pvals = {}
        for arm in (a for a, d in arms.items() if d.get("bounded") and a != primary_arm):
            if arm in test and test[arm]["n"] > 1:
                diff, se = rs.welch(test[arm], test["masters_paper"])
                pvals[arm] = rs.two_sided_p(diff / se) if se > 0 else 1.0
                holm_rows[arm] = {"diff": diff, "se": se, "p": pvals[arm]}
        for arm, rejected in rs.holm(pvals).items():
            holm_rows[arm]["rejected"] = rejected
    return {"selection": sel, "test": test, "faithfulness": faith, "rmax": rmax, "mix": mix,
            "done": done, "total": total, "holm": holm_rows,
            "verdict": rs.verdict(primary, test, rmax.get("PRIMARY", {}))}


def _finished(ledger: Path, cell: Mapping[str, Any], n_val: int, n_test: int,
              primary_arm: str | None, sel: Mapping[str, Any], grid: Sequence[dict[str, Any]]) -> bool:
    if cell["phase"] == "grid":
        return rs.ledger_path(ledger, cell, "validation", n_val).exists()
    arm = primary_arm if cell["arm"] == "PRIMARY" else cell["arm"]
    if arm is None or arm not in sel["chosen"]:
        return False
    return rs.ledger_path(ledger, with_choice(cell, arm, sel, grid), "test", n_test).exists()


def _fmt(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not stat or not stat["n"]:
        return "-"
    se = "" if stat["n"] < 2 else f" +/- {stat['se']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{se} (n={stat['n']})"


def measured_seconds(ledger: Path) -> dict[str, float]:
    """Training and evaluation seconds summed over every cell in the ledger (one core each)."""
    train = evaluate = 0.0
    n = 0
    for path in ledger.glob("*/*.json"):
        if path.parent.name == "reference":
            continue
        record = json.loads(path.read_text())
        grid_test = path.name.startswith("lr") and "-test-" in path.name  # the same training as its validation
        train += 0.0 if grid_test else record.get("train_seconds") or 0.0
        evaluate += record.get("seconds") or 0.0
        n += 1
    return {"records": n, "train_s": round(train), "evaluate_s": round(evaluate)}


def render(report: Mapping[str, Any]) -> str:
    r = report["results"]
    cost = report.get("measured") or {}
    lines = [
        f"# {report.get('title') or 'The shapes_reason study (issue 13)'}", "",
        f"Pre-registration `{report['prereg']}`, config hash `{report['config_hash']}`; r_max {report['r_max']} "
        f"({report.get('r_max_source') or 'probe G2'}). Written {report['date']} by `{report.get('command') or 'python benchmarks/quality_reason.py'}` "
        f"(`--report` rewrites it from the finished cells).", "",
        "Cells finished: " + ", ".join(f"{k} {r['done'][k]}/{r['total'][k]}" for k in r["done"]) + "."
        + (f" Measured cost: {cost['records']} evaluations; training {cost['train_s'] / 3600:.2f} CPU-h and "
           f"decoding {cost['evaluate_s'] / 3600:.2f} CPU-h, summed over cells (the bank and the models "
           "not included)." if cost else ""), "",
        f"**Verdict: {r['verdict']['outcome']}** (pre-registered criteria; `incomplete` while cells are missing).", "",
        f"## Test accuracy at each arm's chosen setting ({report['n_test']} test questions, seeds "
        f"{', '.join(map(str, report['seeds']))}, mean +/- SE)", "",
        "| arm | chosen on validation | validation | test final answer | trace faithfulness | vs SFT |",
        "|---|---|---:|---:|---:|---:|",
    ]
    sel, test = r["selection"], r["test"]
    sft = test.get("sft")
    for role, label in (("teacher", "teacher (unmasked, not trained here)"), ("student", "base student (before any run)"),
                        ("mid", "mid model (the no-gap student before its runs)")):
        acc = report.get("references", {}).get(role)
        if acc:
            lines.append(f"| {label} | - | - | {acc[rs.ACCURACY]:.3f} | {acc.get(rs.FAITHFULNESS, float('nan')):.3f} | |")
    edge = f"lr{min(report['lr_grid']):g}"
    for arm, setting in sel["chosen"].items():
        val = sel["validation"][arm][setting]
        diff = ""
        if sft and test[arm]["n"] > 1 and sft["n"] > 1 and arm != "sft":
            d, se = rs.welch(test[arm], sft)
            diff = f"{d:+.3f} +/- {se:.3f}"
        mark = " (grid edge)" if setting.split("-")[0] == edge else ""
        lines.append(f"| {arm} | {setting}{mark} | {val['mean']:.3f} | {_fmt(test[arm])} | {_fmt(r['faithfulness'][arm])} "
                     f"| {diff} |")
    p = sel["primary"]
    lines += ["", "Primary bounded objective: " + (f"`{p['bounded']}` ({p['arm']}, validation {p['validation']:.3f})"
                                                   if p else "not chosen yet (its validation cells are not all in)"), ""]
    lines += [f"## Validation accuracy of every grid point ({report['n_validation']} validation questions)", "",
              "| arm | setting | validation |", "|---|---|---:|"]
    for arm, settings in sel["validation"].items():
        for setting, stat in sorted(settings.items()):
            lines.append(f"| {arm} | {setting} | {_fmt(stat)} |")
    if r["rmax"]:
        lines += ["", "## r_max sweep (test)", "", "| arm | " + " | ".join(f"{k:g}" for k in
                                                                     sorted(next(iter(r['rmax'].values())))) + " |",
                  "|---|" + "---:|" * len(next(iter(r["rmax"].values())))]
        for label, points in r["rmax"].items():
            lines.append(f"| {label} | " + " | ".join(_fmt(points[k]) for k in sorted(points)) + " |")
    if r["mix"]:
        lines += ["", "## Response mix, teacher + student (masters_paper, test)", "",
                  "| mix | test |", "|---|---:|"] + [f"| {k} | {_fmt(v)} |" for k, v in r["mix"].items()]
    if r["holm"]:
        lines += ["", "## The other bounded objectives against masters_paper (Holm, family-wise 0.05)", "",
                  "| arm | difference | SE | p | rejected |", "|---|---:|---:|---:|---|"]
        for arm, row in r["holm"].items():
            lines.append(f"| {arm} | {row['diff']:+.3f} | {row['se']:.3f} | {row['p']:.3g} | {row.get('rejected')} |")
    primary_arm = p["arm"] if p else None
    refs = report.get("references", {})
    lines += ["", "## The issue's mechanism checks (secondary; the verdict follows the pre-registered criteria)", ""]
    for a, b in ((primary_arm, "naive_kd"), ("progressive_kd", "naive_kd"), (primary_arm, "progressive_kd")):
        if a in test and b in test and test[a]["n"] > 1 and test[b]["n"] > 1:
            d, se = rs.welch(test[a], test[b])
            lines.append(f"- {a} - {b}: {d:+.3f} +/- {se:.3f} ({'beats' if d > 2 * se else 'within 2 SE or below'})")
    if primary_arm in test and "control_no_gap_student" in test and refs.get("student") and refs.get("mid"):
        small = test[primary_arm]["mean"] - refs["student"][rs.ACCURACY]
        big = test["control_no_gap_student"]["mean"] - refs["mid"][rs.ACCURACY]
        lines.append(f"- gain over the student's own start: small student ({primary_arm}) {small:+.3f}, no-gap "
                     f"student (masters_paper) {big:+.3f} (starts are single models on the same test questions)")
    dist = report.get("distances") or {}
    fm, nk = dist.get("fixed_mask"), dist.get("naive_kd")
    if fm and nk and fm["n"] and nk["n"]:
        d, se = rs.welch(fm, nk) if fm["n"] > 1 and nk["n"] > 1 else (fm["mean"] - nk["mean"], float("nan"))
        lines.append(f"- (a) JSD of the trained student to its teacher ({DISTANCE_QUESTIONS} validation reference answers): "
                     f"fixed mask to T_r_max {_fmt(fm, 4)}, naive KD to T_0 {_fmt(nk, 4)}; difference {d:+.4f} +/- {se:.4f} "
                     f"({'closer' if d < -2 * se else 'not closer by 2 SE'})")
    else:
        lines.append("- (a) JSD of the trained students to their teachers: not measured yet (fixed mask's choice pending)")
    levels = [row for row in (report.get("probe_levels") or []) if row["masker"] in ("magnitude", "(unmasked)")]
    if levels:
        lines.append("- (a) JSD(T_r, S) of the base student by r (probe G2): "
                     + ", ".join(f"{row['level']:.2f}: {row['jsd_s']:.4f}" for row in levels))
    v = r["verdict"]
    lines += ["", "## Criteria", "", "| criterion | holds |", "|---|---|"]
    lines += [f"| support: {k} | {'not measured yet' if x is None else x} |" for k, x in v["support"].items()]
    lines += [f"| refute: {k} | {'not measured yet' if x is None else x} |" for k, x in v["refute"].items()]
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = report["results"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    arms = [a for a in r["test"] if r["test"][a]["n"]]
    ax = axes[0]
    ax.bar(range(len(arms)), [r["test"][a]["mean"] for a in arms],
           yerr=[2 * (r["test"][a]["se"] if r["test"][a]["n"] > 1 else 0) for a in arms], color="tab:blue")
    ax.set_xticks(range(len(arms)), arms, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (final answer), +/- 2 SE")
    ax.set_title("arms at their chosen settings")
    ax = axes[1]
    for label, points in r["rmax"].items():
        xs = [k for k in sorted(points) if points[k]["n"]]
        if xs:
            ax.errorbar(xs, [points[k]["mean"] for k in xs],
                        yerr=[2 * (points[k]["se"] if points[k]["n"] > 1 else 0) for k in xs], marker="o", label=label)
    ax.set_xlabel("r_max")
    ax.set_title("r_max sweep (test)")
    if r["rmax"]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def references(args: Any, study: Mapping[str, Any], r_max: float) -> dict[str, Any]:
    """The unchanged teacher and base student on the test split: fixed points, not chosen by anything."""
    from masters.config import validate_run_spec
    from masters.data import load_splits
    from masters.engine.evaluate import evaluate_model
    from masters.files import atomic_write_json

    models, n_test = Path(args.models), study["n_test_eval"]
    base = rs.base_config(study, Path(args.out), models, r_max)
    rows, test, spec = {}, None, None
    for role in ("teacher", "mid", "student"):
        path = ledger_of(args) / "reference" / f"{role}-test-{n_test}.json"
        if not path.exists():
            if not (models / role).exists():
                continue
            if test is None:
                spec = validate_run_spec(dict(base))
                test = list(load_splits(spec.task)["test"])[:n_test]
            res = evaluate_model(models / role, test, spec.rewards, batch_size=rs.EVAL_BATCH,
                                 max_new_tokens=rs.MAX_NEW_TOKENS, split="test")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"split": "test", "n": res.n, "accuracy": res.accuracy})
        rows[role] = json.loads(path.read_text())["accuracy"]
    return rows


DISTANCE_QUESTIONS = 512


def _probe_levels(args: Any) -> list[dict[str, Any]]:
    path = Path(args.results) / f"{label(args)}_probe.json"
    return json.loads(path.read_text()).get("levels", []) if path.exists() else []


def distances(args: Any, study: Mapping[str, Any], arms: Mapping[str, Any], cells: Sequence[dict[str, Any]],
              bounded: Sequence[str], r_max: float) -> dict[str, Any]:
    """Criterion (a): JSD from each trained student to the teacher it was distilled from (fixed mask: the
    teacher masked at r_max; naive KD: the unmasked teacher), teacher-forced on the reference answers of
    validation questions, at each arm's chosen setting. Kept in the ledger; a student no longer on disk
    is skipped (its seed is then missing from the mean)."""
    from masters.adapters.resolve import resolve_adapter
    from masters.config import validate_component, validate_run_spec
    from masters.data import load_splits
    from masters.engine.generation import check_tokenizers
    from masters.engine.probe import _forced, _mean_jsd, forced_levels
    from masters.files import atomic_write_json

    import torch

    out, models = Path(args.out), Path(args.models)
    ledger = ledger_of(args)
    grid = _grid_cells(cells)
    sel = selection(ledger, grid, arms, bounded, study["n_validation_eval"], len(study["seeds"]))
    wanted = {"naive_kd": 0.0, "fixed_mask": r_max}
    todo = {arm: [c for c in chosen_cells(grid, sel["chosen"]) if c["arm"] == arm] for arm in wanted}
    result: dict[str, Any] = {}
    teacher = samples = None
    for arm, level in wanted.items():
        values = []
        for cell in todo[arm]:
            path = ledger / arm / f"{rs.cell_name(cell)}-distance-{DISTANCE_QUESTIONS}.json"
            student_dir = rs.cell_dir(out, cell) / "student"
            if not path.exists() and student_dir.exists():
                if teacher is None:
                    base = rs.base_config(study, out, models, r_max)
                    spec = validate_run_spec(dict(base))
                    vocab = check_tokenizers(spec)
                    samples = list(load_splits(spec.task)["validation"])[:DISTANCE_QUESTIONS]
                    teacher = resolve_adapter(str(models / "teacher"))
                    teacher.model.eval()
                    responses = teacher.response_ids([x.answer or "" for x in samples])
                    with torch.no_grad():
                        t0, mask = _forced(teacher, samples, responses, vocab, 64)
                    logits = {0.0: t0}
                    for ratio, tr in forced_levels(teacher, validate_component("masker", "magnitude"), [r_max],
                                                   samples, responses, vocab, 64):
                        logits[float(ratio)] = tr
                student = resolve_adapter(str(student_dir))
                student.model.eval()
                with torch.no_grad():
                    s_logits, _ = _forced(student, samples, responses, vocab, 64)
                atomic_write_json(path, {"level": level, "jsd": _mean_jsd(logits[level], s_logits, mask),
                                         "n": len(samples)})
            if path.exists():
                values.append(json.loads(path.read_text())["jsd"])
        result[arm] = rs.mean_se(values)
    return result


def write_report(args: Any, out: Path, study: Mapping[str, Any], arms: Mapping[str, Any],
                 cells: Sequence[dict[str, Any]], bounded: Sequence[str], r_max: float, prereg: str,
                 config_hash: str, extend: Callable[[Mapping[str, Any]], list[str]] | None = None) -> int:
    """``<label>_study.{json,md,png}`` from the ledger; ``extend`` adds sections (lines) to the markdown."""
    from masters.files import atomic_write, atomic_write_json

    results, ledger = Path(args.results), ledger_of(args)
    name = label(args)
    earlier = results / f"{name}_study.json"
    if (out / "prepared.json").exists():
        prepared = json.loads((out / "prepared.json").read_text())
    else:  # a checkout without the work directory: keep what the report that ran the bank recorded
        prepared = json.loads(earlier.read_text()).get("prepared") if earlier.exists() else None
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "label": name, "prereg": prereg, "config_hash": config_hash, "r_max": r_max,
              # how a replicate names itself and its r_max (main's main() sets none of them)
              **{key: getattr(args, key, None) for key in ("title", "command", "r_max_source")},
              "seeds": list(study["seeds"]), "n_validation": study["n_validation_eval"], "n_test": study["n_test_eval"],
              "prepared": prepared,
              "results": collect(ledger, study, arms, cells, bounded),
              "references": references(args, study, r_max), "lr_grid": list(study["lr_grid"]),
              "measured": measured_seconds(ledger),
              "distances": distances(args, study, arms, cells, bounded, r_max),
              "probe_levels": _probe_levels(args)}
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / f"{name}_study.json",
                      json.loads(json.dumps(report, default=str, allow_nan=True)))
    text = render(report)
    if extend is not None:
        text += "\n" + "\n".join(extend(report)) + "\n"
    atomic_write(results / f"{name}_study.md", text)
    plot(report, results / f"{name}_study.png")
    print(text)
    return 0
