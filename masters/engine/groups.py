"""Training groups drawn from the bank (method.md section 4, decision 3 and 5).

A question's group at a stage is ``n_teacher`` responses of the stage's masked teacher plus
``n_student`` student responses, drawn without replacement from what is banked by an RNG keyed
on (run seed, question id, teacher, stage): the same run always trains on the same groups, and
another seed draws other groups from the same bank.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from masters.bank.schema import STUDENT, TEACHER
from masters.engine.identity import derived_seed
from masters.errors import DataError


class BankIndex:
    """Bank rows by (source, teacher, level, question), with their accuracy rewards."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], accuracy: Mapping[str, Mapping[str, float]] | None = None):
        self._rows: dict[tuple[str, str, int | None, str], list[Mapping[str, Any]]] = defaultdict(list)
        for row in rows:
            self._rows[(row["source"], row["teacher"], row["level_bp"], row["question_id"])].append(row)
        for group in self._rows.values():
            group.sort(key=lambda r: r["sample_index"])
        self.accuracy = {k: dict(v) for k, v in (accuracy or {}).items()}

    def rows(self, source: str, teacher: str, level_bp: int | None, question_id: str) -> list[Mapping[str, Any]]:
        return self._rows.get((source, teacher, level_bp, question_id), [])

    def draw_group(self, question_id: str, teacher: str, level_bp: int, n_teacher: int, n_student: int, *,
                   seed: int, stage: int) -> list[Mapping[str, Any]]:
        rng = random.Random(derived_seed("group", seed, question_id, teacher, stage))
        group = []
        for source, who, level, n in ((TEACHER, teacher, level_bp, n_teacher), (STUDENT, "", None, n_student)):
            if n == 0:
                continue
            pool = self.rows(source, who, level, question_id)
            if len(pool) < n:
                where = f"{who or 'student'}" + (f" at level {level / 10_000:g}" if level is not None else "")
                raise DataError(
                    f"the bank holds {len(pool)} {source} response(s) for question {question_id!r} ({where}); "
                    f"training draws {n}",
                    where="bank",
                    fix="run `masters generate CONFIG` (with n_teacher_responses / n_student_responses at least "
                    "training.n_teacher / n_student)",
                )
            group.extend(rng.sample(pool, n))
        return group
