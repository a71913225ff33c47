"""Scoring is its own resumable stage: rows already scored are skipped; None stays unscored."""

from __future__ import annotations

from typing import ClassVar, Literal

import pytest

from masters.bank.scoring import accuracy_rewards, score_bank, score_key
from masters.bank.store import ResponseBank
from masters.data.types import VQASample
from masters.errors import DataError
from masters.rewards.specs import ExactMatchRewardSpec, JSDDistillRewardSpec
from masters.specs import RewardSpec

from test_store import make_row


class FlakyJudgeSpec(RewardSpec):
    """Scores only questions with an even number; the others look like an unreachable judge."""

    implementation: ClassVar[str] = "test_scoring:FlakyJudge"
    name: Literal["flaky"] = "flaky"


class FlakyJudge:
    calls: ClassVar[list[int]] = []

    def __init__(self, spec, **_):
        self.spec = spec

    def score(self, items):
        FlakyJudge.calls.append(len(items))
        return [1.0 if int(i.question.split()[-1]) % 2 == 0 else None for i in items]


@pytest.fixture
def bank(tmp_path):
    bank = ResponseBank.open(tmp_path, stage_hash="h", tokenizer_fingerprint="t")
    bank.append([make_row(q, s) for q in range(4) for s in range(2)])
    return bank


SAMPLES = {f"q{q}": VQASample(id=f"q{q}", images=(), question=f"question {q}", answer=f"answer {q if q < 2 else 9}")
           for q in range(4)}


def test_scores_every_row_once_and_skips_distillation_rewards(bank):
    specs = [ExactMatchRewardSpec(), JSDDistillRewardSpec()]
    report = score_bank(bank, SAMPLES, specs, progress=False)
    assert report.scored == {"exact_match": 8} and report.mean == {"exact_match": 0.5}
    again = score_bank(bank, SAMPLES, specs, progress=False)
    assert again.scored == {"exact_match": 8}
    assert len(list(bank.score_dir(score_key(specs[0])).glob("*.parquet"))) == 1  # nothing rewritten


def test_unscorable_rows_stay_unscored_and_are_retried(bank):
    FlakyJudge.calls.clear()
    score_bank(bank, SAMPLES, [FlakyJudgeSpec()], batch_size=3, progress=False)
    assert len(bank.scores(score_key(FlakyJudgeSpec()))) == 4
    with pytest.raises(DataError, match="4 bank rows have no 'flaky' score"):
        accuracy_rewards(bank, [FlakyJudgeSpec()])
    FlakyJudge.calls.clear()
    score_bank(bank, SAMPLES, [FlakyJudgeSpec()], progress=False)
    assert FlakyJudge.calls == [4]  # only the unscored rows were sent again


def test_changed_reward_settings_score_under_a_new_key(bank):
    a, b = ExactMatchRewardSpec(), ExactMatchRewardSpec(case_sensitive=True)
    assert score_key(a) != score_key(b)
    assert score_key(a) == score_key(ExactMatchRewardSpec(weight=3.0))  # weight applies later


def test_bank_questions_missing_from_the_data_set_are_refused(bank):
    with pytest.raises(DataError, match="not in the data set"):
        score_bank(bank, {"q0": SAMPLES["q0"]}, [ExactMatchRewardSpec()], progress=False)
