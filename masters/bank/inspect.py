"""``masters bank inspect``: what a bank holds, per teacher and level and for the student.

For each group (source, teacher, level): rows, questions, mean accuracy per accuracy reward of
the config (from the scores; ``None`` where the group is not fully scored, with the scored count
kept), mean response length in tokens, truncation and empty rates, and two diversity measures:

* ``distinct_ratio``: distinct response texts / responses, per question, averaged over questions
  (1.0: every sample differs; 1/n: the n samples are one answer repeated);
* ``distinct_2``: distinct token bigrams / token bigrams, pooled over a question's responses,
  averaged over questions (responses shorter than two tokens add no bigram).

:func:`plot_degradation` draws accuracy against mask ratio, one line per teacher (the teacher's
degradation curve), the student as a horizontal dashed line.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.bank.schema import STUDENT
from masters.errors import DataError

if TYPE_CHECKING:
    from masters.specs import RunSpec

SUMMARY = "summary.json"


@dataclass
class GroupStats:
    source: str
    teacher: str
    level_bp: int | None
    rows: int
    questions: int
    mean_tokens: float
    truncation_rate: float
    empty_rate: float
    distinct_ratio: float
    distinct_2: float
    accuracy: dict[str, float | None] = field(default_factory=dict)  # reward key -> mean, None if unscored
    scored: dict[str, int] = field(default_factory=dict)  # reward key -> rows scored

    @property
    def label(self) -> str:
        return "student" if self.source == STUDENT else f"{Path(self.teacher).name} @ {self.level_bp / 10000:.2f}"


def group_stats(rows: Sequence[Mapping[str, Any]], scores: Mapping[str, Mapping[str, float]]) -> list[GroupStats]:
    """Statistics per (source, teacher, level); teachers in first-seen order, levels high to low, student last."""
    groups: dict[tuple[str, str, int | None], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["source"], row["teacher"], row["level_bp"])].append(row)
    teacher_order = list(dict.fromkeys(r["teacher"] for r in rows if r["source"] != STUDENT))

    def order(key: tuple[str, str, int | None]) -> tuple:
        source, teacher, level = key
        if source == STUDENT:
            return (1, 0, 0)
        return (0, teacher_order.index(teacher), -(level or 0))

    out = []
    for key in sorted(groups, key=order):
        members = groups[key]
        by_question: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in members:
            by_question[row["question_id"]].append(row)
        n = len(members)
        accuracy, scored = {}, {}
        for reward, values in scores.items():
            got = [values[r["row_id"]] for r in members if r["row_id"] in values]
            scored[reward] = len(got)
            accuracy[reward] = sum(got) / len(got) if got and len(got) == n else None
        out.append(GroupStats(
            source=key[0], teacher=key[1], level_bp=key[2], rows=n, questions=len(by_question),
            mean_tokens=sum(r["num_tokens"] for r in members) / n,
            truncation_rate=sum(bool(r["truncated"]) for r in members) / n,
            empty_rate=sum(bool(r["empty"]) for r in members) / n,
            distinct_ratio=_mean(len({r["response_text"] for r in qs}) / len(qs) for qs in by_question.values()),
            distinct_2=_mean(_distinct_n([r["token_ids"] for r in qs], 2) for qs in by_question.values()),
            accuracy=accuracy, scored=scored,
        ))
    return out


def _distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float | None:
    grams = [tuple(s[i:i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _mean(values: Any) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")


def inspect_bank(spec: RunSpec) -> tuple[list[GroupStats], Path]:
    """Statistics of the run's bank; writes them as ``summary.json`` in the bank directory."""
    from masters.bank.scoring import accuracy_specs, score_key
    from masters.bank.store import ResponseBank, _atomic_write_json
    from masters.engine.generation import bank_dir

    bank = ResponseBank(bank_dir(spec))
    manifest = bank.manifest()  # a clear error when there is no bank yet
    columns = ["row_id", "source", "teacher", "level_bp", "question_id", "response_text", "token_ids", "num_tokens",
               "truncated", "empty"]
    rows = bank.table(columns).to_pylist()
    scores = {key: bank.scores(score_key(rspec)) for key, rspec in accuracy_specs(spec.rewards)}
    stats = group_stats(rows, scores)
    path = bank.directory / SUMMARY
    _atomic_write_json({
        "bank": str(bank.directory), "stage_hash": manifest.get("stage_hash"),
        "tokenizer_fingerprint": manifest.get("tokenizer_fingerprint"), "rows": len(rows),
        "rewards": {key: score_key(rspec) for key, rspec in accuracy_specs(spec.rewards)},
        "diversity": {"distinct_ratio": "distinct response texts / responses per question, mean over questions",
                      "distinct_2": "distinct token bigrams / bigrams per question, mean over questions"},
        "groups": [_json_ready({**asdict(s), "label": s.label, "mask_ratio": None if s.level_bp is None else s.level_bp / 10000})
                   for s in stats],
    }, path)
    return stats, path


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


def plot_degradation(stats: Sequence[GroupStats], path: str | os.PathLike[str], *, reward: str | None = None) -> Path:
    """Accuracy against mask ratio, one line per teacher (student dashed); PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rewards = list(dict.fromkeys(k for s in stats for k in s.accuracy))
    if reward is not None and reward not in rewards:
        raise DataError(f"no accuracy reward {reward!r} in the config", where="--reward",
                        fix=f"choose one of {', '.join(rewards) or '(none)'}")
    chosen = [reward] if reward else rewards
    plotted = [k for k in chosen if any(s.accuracy.get(k) is not None and s.source != STUDENT for s in stats)]
    if not plotted:
        raise DataError("no teacher level of the bank is fully scored: nothing to plot", where="--plot",
                        fix="run `masters score CONFIG` first")
    fig, axes = plt.subplots(1, len(plotted), figsize=(5.5 * len(plotted), 4), squeeze=False)
    for ax, key in zip(axes[0], plotted):
        by_teacher: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for s in stats:
            if s.source != STUDENT and s.accuracy.get(key) is not None:
                by_teacher[s.teacher].append((s.level_bp / 10000, s.accuracy[key]))
        for teacher, points in by_teacher.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=Path(teacher).name)
        for s in stats:
            if s.source == STUDENT and s.accuracy.get(key) is not None:
                ax.axhline(s.accuracy[key], linestyle="--", color="grey", label="student")
        ax.set_xlabel("mask ratio")
        ax.set_ylabel(f"mean accuracy ({key})")
        ax.set_title(f"teacher degradation: {key}")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    from masters.files import atomic_path

    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def render_table(stats: Sequence[GroupStats], title: str = "response bank") -> Any:
    from rich.table import Table

    rewards = list(dict.fromkeys(k for s in stats for k in s.accuracy))
    table = Table(title=title, title_justify="left")
    table.add_column("group", no_wrap=True)
    for name in ("rows", "questions", *(f"acc {k}" for k in rewards), "mean tokens", "truncated", "empty",
                 "distinct", "distinct-2"):
        table.add_column(name, justify="right")
    for s in stats:
        acc = []
        for k in rewards:
            value = s.accuracy.get(k)
            acc.append(f"{value:.3f}" if value is not None else f"- ({s.scored.get(k, 0)}/{s.rows} scored)")
        table.add_row(s.label, str(s.rows), str(s.questions), *acc, f"{s.mean_tokens:.1f}",
                      f"{s.truncation_rate:.1%}", f"{s.empty_rate:.1%}", _fmt(s.distinct_ratio), _fmt(s.distinct_2))
    return table


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def summary_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
