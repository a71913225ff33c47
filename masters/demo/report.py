"""The demo's outputs: the summary table, plots (PNG, Agg backend), ``report.md``, ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from masters.demo.spec import DemoSpec

PLOTS = ("mask_schedule.png", "rewards.png", "losses.png", "accuracy.png")


def row_label(row: dict[str, Any]) -> str:
    if row["model"] == "teacher":
        return f"teacher @ mask {row['level']:.2f}"
    return row["model"]


def table(result: Any) -> Any:
    """A rich table: accuracy of every model, then the wall time of every phase."""
    from rich.table import Table

    t = Table(title="masters demo: exact-match accuracy on the shapes test split", title_justify="left")
    t.add_column("model")
    t.add_column("accuracy", justify="right")
    base = next((r["accuracy"] for r in result.rows if r["model"] == "base student"), None)
    t.add_column("vs base student", justify="right")
    for row in result.rows:
        delta = "" if base is None or row["model"] in ("teacher", "base student") else f"{row['accuracy'] - base:+.3f}"
        t.add_row(row_label(row), f"{row['accuracy']:.3f}", delta)
    t.add_section()
    for p in result.phases:
        flag = " [red](over budget)[/]" if p.over else ""
        t.add_row(f"phase {p.phase}", f"{p.seconds:.1f} s", f"budget {p.budget:.0f} s{flag}")
    t.add_row("total", f"{result.total_seconds:.1f} s", "")
    return t


def _read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def plots(spec: DemoSpec, result: Any) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(spec.output_dir)
    runs = {name: _read_metrics(path) for name, path in result.metrics.items()}
    masters = runs.get("masters", [])
    files: dict[str, str] = {}
    window = max(1, len(masters) // 20)

    # 1. the restore schedule: mask ratio of the teacher at each optimizer step
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if masters:
        ax.step([m["step"] for m in masters], [m["level"] for m in masters], where="post", color="tab:red")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("teacher mask ratio")
    ax.set_title("Masters restore schedule (staircase)")
    ax.set_ylim(bottom=-0.01)
    ax.grid(alpha=0.3)
    files["mask_schedule"] = _save(fig, out / PLOTS[0])

    # 2. rewards: accuracy, distillation and total, raw, smoothed
    fig, ax = plt.subplots(figsize=(6, 3.2))
    keys = sorted({k for m in masters for k in m if k.startswith("reward/") and not k.endswith("/weighted")})
    for key in keys:
        steps = [m["step"] for m in masters if key in m]
        ax.plot(steps, _smooth([m[key] for m in masters if key in m], window), label=key.replace("reward/", ""))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"mean reward (moving average of {window})")
    ax.set_title("Masters rewards per step")
    if keys:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    files["rewards"] = _save(fig, out / PLOTS[1])

    # 3. loss terms of every run
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for key in ("loss/policy", "loss/kl", "loss/distill", "loss/total"):
        steps = [m["step"] for m in masters if key in m]
        if steps:
            axes[0].plot(steps, _smooth([m[key] for m in masters if key in m], window), label=key.replace("loss/", ""))
    axes[0].set_title("Masters loss terms")
    axes[0].set_xlabel("optimizer step")
    axes[0].legend(fontsize=8)
    for name in ("teacher", "student warm-up", "sft", "naive_kd", "masters"):
        rows = runs.get(name, [])
        if rows:
            w = max(1, len(rows) // 20)
            axes[1].plot([m["step"] for m in rows], _smooth([m["loss/total"] for m in rows], w), label=name)
    axes[1].set_title("total loss of every training run")
    axes[1].set_xlabel("optimizer step")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    files["losses"] = _save(fig, out / PLOTS[2])

    # 4. accuracy: the teacher along the mask levels; each student before and after training
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    teacher = [r for r in result.rows if r["model"] == "teacher"]
    axes[0].plot([r["level"] for r in teacher], [r["accuracy"] for r in teacher], "o-", color="tab:red")
    axes[0].set_xlabel("mask ratio")
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("teacher accuracy at each mask level")
    axes[0].invert_xaxis()
    students = [r for r in result.rows if r["model"] != "teacher"]
    colors = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:purple"]
    axes[1].bar([r["model"] for r in students], [r["accuracy"] for r in students],
                color=colors[: len(students)])
    if teacher:
        axes[1].axhline(teacher[-1]["accuracy"], color="tab:red", ls="--", label="teacher (unmasked)")
        axes[1].legend(fontsize=8)
    axes[1].set_title("students: before (base) and after training")
    for ax in axes:
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, axis="y")
    files["accuracy"] = _save(fig, out / PLOTS[3])
    plt.close("all")
    return files


def _save(fig: Any, path: Path) -> str:
    from masters.files import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    return str(path)


def report_md(spec: DemoSpec, result: Any) -> str:
    lines = ["# masters demo", "",
             "The shapes task, a teacher trained on it, a smaller base student, and the full Masters method "
             "against SFT and naive KD from the same base student (exact-match accuracy on "
             f"{result.rows[0]['n'] if result.rows else 0} test questions).", "",
             "| model | accuracy |", "|---|---:|"]
    lines += [f"| {row_label(r)} | {r['accuracy']:.3f} |" for r in result.rows]
    lines += ["", "| phase | seconds | budget |", "|---|---:|---:|"]
    lines += [f"| {p.phase} | {p.seconds:.1f} | {p.budget:.0f}{' (over)' if p.over else ''} |" for p in result.phases]
    lines += [f"| total | {result.total_seconds:.1f} | |", ""]
    cached = [w for w, c in (("teacher", result.teacher_cached), ("base student", result.student_cached)) if c]
    if cached:
        lines += [f"Reused from the cache ({spec.cache}): {', '.join(cached)}.", ""]
    if result.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in result.warnings] + [""]
    d = spec.data
    lines += ["## Settings", "",
              f"- task: question types {', '.join(d.question_types)}; forms {', '.join(d.forms)}; "
              f"up to {d.max_shapes} shapes per image",
              f"- teacher: {spec.teacher.family} {spec.teacher.size} {spec.teacher.dims or ''} patch "
              f"{spec.teacher.patch}, SFT lr {spec.teacher.learning_rate}, "
              f"{spec.teacher.n_train} questions x {spec.teacher.passes} passes, batch {spec.teacher.batch_size}",
              f"- base student: {spec.student.family} {spec.student.size} {spec.student.dims or ''} patch "
              f"{spec.student.patch}, warm-up lr {spec.student.learning_rate}, "
              f"{spec.student.n_train} questions x {spec.student.passes} passes, batch {spec.student.batch_size}",
              f"- distillation: {spec.distill.n_train} questions, {spec.distill.questions_per_step} per step, "
              f"lr {spec.distill.learning_rate}, r_max {spec.distill.r_max}, step {spec.distill.step}, "
              f"groups {spec.distill.n_teacher} teacher + {spec.distill.n_student} student responses",
              "", "## Plots", ""]
    lines += [f"![{name}]({name})" for name in PLOTS]
    return "\n".join(lines) + "\n"


def write_outputs(spec: DemoSpec, result: Any) -> None:
    out = Path(spec.output_dir)
    result.files = plots(spec, result) if result.rows else {}
    from masters.files import atomic_write, atomic_write_json

    atomic_write(out / "report.md", report_md(spec, result))
    result.files["report"] = str(out / "report.md")
    result.files["results"] = str(out / "results.json")
    payload = {"spec": spec.model_dump(mode="json"), **result.to_json()}
    atomic_write_json(out / "results.json", payload)
