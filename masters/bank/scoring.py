"""The scoring stage (design decision 8): accuracy rewards, once per banked response, resumable.

Each accuracy reward writes its values under ``scores/<reward>-<spec hash>/`` keyed by row id, so
changing a reward's settings scores again under a new key while the old values stay on disk.
A reward may return ``None`` for a row it could not score (an unreachable judge): that row stays
unscored and the next run retries it; nothing else is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from masters.bank.store import ResponseBank
from masters.engine.faults import kill_point
from masters.engine.progress import progress_bar
from masters.engine.identity import stage_hash
from masters.errors import DataError
from masters.interfaces import ScoredResponse
from masters.rewards.combine import reward_keys


def accuracy_specs(reward_specs: Sequence[Any]) -> list[tuple[str, Any]]:
    """(log key, spec) for the offline (accuracy) rewards of a run, in spec order."""
    keys = reward_keys(reward_specs)
    return [(k, s) for k, s in zip(keys, reward_specs) if type(s).signal == "accuracy"]


def score_key(spec: Any) -> str:
    """Folder name of one reward's scores: its name plus a hash of the settings that change a score.

    ``weight`` applies later, and a spec's ``operational_fields`` (timeouts, retries, concurrency of
    a judge) change how a score is obtained, not its value: neither is hashed.
    """
    skip = {"weight", *getattr(type(spec), "operational_fields", ())}
    fields = {k: v for k, v in spec.model_dump(mode="json").items() if k not in skip}
    return f"{spec.name}-{stage_hash('score', fields)[:8]}"


@dataclass
class ScoringReport:
    scored: dict[str, int] = field(default_factory=dict)
    unscored: dict[str, int] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)


def score_bank(bank: ResponseBank, samples: Mapping[str, Any], reward_specs: Sequence[Any], *,
               batch_size: int = 256, progress: bool = True, context: Mapping[str, Any] | None = None) -> ScoringReport:
    """Score every banked row not yet scored by each accuracy reward; return counts and means.

    ``context`` goes to each reward's ``spec.build`` (the LLM judge takes ``default_model_path``,
    the unmasked teacher, from it).
    """
    bank.manifest()  # a clear error when the bank does not exist yet (before anything is created)
    with bank.writing("score"):  # one writer per directory (decision 19)
        return _score_bank(bank, samples, reward_specs, batch_size=batch_size, progress=progress, context=context)


def _score_bank(bank: ResponseBank, samples: Mapping[str, Any], reward_specs: Sequence[Any], *,
                batch_size: int, progress: bool, context: Mapping[str, Any] | None) -> ScoringReport:
    table = bank.table(["row_id", "question_id", "response_text"])
    rows = table.to_pylist()
    if not rows:
        raise DataError("the bank holds no responses to score", where=str(bank.directory),
                        fix="run `masters generate CONFIG` first (or check that the data has train questions)")
    missing = sorted({r["question_id"] for r in rows} - set(samples))
    if missing:
        raise DataError(
            f"{len(missing)} banked question id(s) are not in the data set, e.g. {missing[0]!r}",
            where=str(bank.directory),
            fix="score with the data config the bank was generated from",
        )
    report = ScoringReport()
    done_units = 0
    with progress_bar(progress) as bar:
        for key, spec in accuracy_specs(reward_specs):
            folder = score_key(spec)
            done = bank.scored_ids(folder)
            pending = [r for r in rows if r["row_id"] not in done]
            task = bar.add_task(f"score {key}", total=len(pending)) if bar else None
            reward = spec.build(**(context or {}))
            unscored = 0
            for start in range(0, len(pending), batch_size):
                chunk = pending[start:start + batch_size]
                items = [_item(samples[r["question_id"]], r["response_text"]) for r in chunk]
                values = reward.score(items)
                if len(values) != len(items):
                    raise DataError(f"reward {spec.name!r} returned {len(values)} values for {len(items)} items",
                                    where=f"reward {spec.name}", fix="its score() must return one value per item")
                pairs = [(r["row_id"], v) for r, v in zip(chunk, values) if v is not None]
                unscored += len(chunk) - len(pairs)
                done_units += bank.write_scores(folder, pairs)
                kill_point("score", done_units)
                if bar:
                    bar.advance(task, len(chunk))
            values = bank.scores(folder)
            report.scored[key] = len(values)
            report.unscored[key] = unscored
            report.mean[key] = sum(values.values()) / len(values) if values else float("nan")
    return report


def accuracy_rewards(bank: ResponseBank, reward_specs: Sequence[Any]) -> dict[str, dict[str, float]]:
    """reward key -> {row id: raw value}; refuses a bank with unscored rows (score it first)."""
    keys = bank.keys()
    out = {}
    for key, spec in accuracy_specs(reward_specs):
        values = bank.scores(score_key(spec))
        if len(keys - set(values)):
            raise DataError(
                f"{len(keys - set(values))} bank rows have no {key!r} score",
                where=str(bank.directory),
                fix="run `masters score CONFIG` (rows a judge could not reach are retried)",
            )
        out[key] = values
    return out


def _item(sample: Any, response: str) -> ScoredResponse:
    return ScoredResponse(question=sample.question, response=response, reference=sample.answer or "",
                          choices=sample.choices, metadata=dict(sample.metadata))
