"""Where a capacity-gap model stands, question kind by question kind (calibrating the testbed).

A model whose overall accuracy sits at the answer prior may have learnt some kinds and none of
the others, or may have memorised its training questions: the two call for different fixes (more
steps on the hard kinds, or more questions). This report shows both, before any gate is run:

    python -m masters.engine.capacity --out runs/shapes-reason --diagnose teacher,student

For each kind: greedy final-answer accuracy on ``n_eval`` validation questions and on as many
of the model's own training questions, beside the prior (always answering the kind's commonest
training answer). Train and validation splits only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def by_kind(samples: Sequence[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for s in samples:
        groups[str(s.metadata.get("kind", "?"))].append(s)
    return dict(sorted(groups.items()))


def prior_accuracy(train: Sequence[Any], evaluation: Sequence[Any]) -> float:
    """Accuracy of always answering the commonest final answer of ``train``."""
    answers = Counter(str(s.metadata.get("answer_text")) for s in train)
    if not answers or not evaluation:
        return float("nan")
    common = answers.most_common(1)[0][0]
    return sum(str(s.metadata.get("answer_text")) == common for s in evaluation) / len(evaluation)


def answer_prior(train: Sequence[Any], evaluation: Sequence[Any]) -> float | None:
    """Accuracy of answering each question kind's commonest training answer (``metadata["kind"]`` and
    ``["answer_text"]``), or None where the task records no final answers."""
    if not evaluation or not all("answer_text" in s.metadata for s in [*train, *evaluation]):
        return None
    seen, right = by_kind(train), 0.0
    for kind, group in by_kind(evaluation).items():
        accuracy = prior_accuracy(seen.get(kind, []), group)
        right += 0.0 if accuracy != accuracy else accuracy * len(group)  # a kind never trained on: nan -> 0
    return right / len(evaluation)


def kind_rows(model_path: Path, train: Sequence[Any], validation: Sequence[Any], rewards: Sequence[Any],
              key: str, *, n_eval: int, max_new_tokens: int) -> list[dict[str, Any]]:
    from masters.engine.evaluate import evaluate_model

    train_kinds, val_kinds = by_kind(train), by_kind(validation)
    rows = []
    for kind, val in val_kinds.items():
        seen = train_kinds.get(kind, [])
        row: dict[str, Any] = {"kind": kind, "n": min(len(val), n_eval),
                               "prior": prior_accuracy(seen, val[:n_eval])}
        for split, samples in (("validation", val[:n_eval]), ("train", seen[:n_eval])):
            row[split] = (evaluate_model(model_path, samples, rewards, batch_size=128, max_new_tokens=max_new_tokens,
                                         split=split).accuracy[key] if samples else float("nan"))
        rows.append(row)
    return rows


def diagnose(spec: Any, out: Path, roles: Sequence[str], *, say: Any = print) -> dict[str, list[dict[str, Any]]]:
    """Per-kind accuracy of each role's cached model (built first if missing), as a table."""
    from rich.console import Console
    from rich.table import Table

    from masters.data import load_splits
    from masters.engine.capacity import accuracy_rewards, build_models, task_spec

    paths = build_models(spec, out, tuple(roles), say=say)
    n_train = max(spec.model(r).n_train for r in roles)
    splits = load_splits(task_spec(spec).model_copy(update={"n_train": n_train}))
    report: dict[str, list[dict[str, Any]]] = {}
    for role in roles:
        model = spec.model(role)
        rewards, key = accuracy_rewards(task_spec(spec).model_dump(mode="json"), paths[role], out / "x")
        report[role] = kind_rows(paths[role], splits["train"][:model.n_train], splits["validation"], rewards, key,
                                 n_eval=spec.n_eval, max_new_tokens=model.max_new_tokens)
        table = Table(title=f"{role}: greedy {key} by question kind (train split = its own SFT questions)")
        for column in ("kind", "n", "validation", "train", "prior"):
            table.add_column(column, justify="left" if column == "kind" else "right")
        for row in report[role]:
            table.add_row(row["kind"], str(row["n"]), *(f"{row[c]:.3f}" for c in ("validation", "train", "prior")))
        Console().print(table)
    return report

