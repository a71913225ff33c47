"""llm_judge with a real (tiny, random) adapter loaded from a checkpoint directory: the chain runs
end to end, text only and greedy. Random weights judge nothing, so only the shape of the result
is pinned."""

from __future__ import annotations

import pytest
from test_judge import FOUR

from masters.rewards.specs import LLMJudgeRewardSpec

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    from masters.models import build_tiny_model

    out = tmp_path_factory.mktemp("judge") / "llava-tiny"
    build_tiny_model("llava", "tiny", out, seed=1)
    return out


def test_tiny_teacher_judges_end_to_end(tiny_teacher):
    # the engine's default: no `model` in the spec, the unmasked teacher's directory in the context
    reward = LLMJudgeRewardSpec(max_new_tokens=8, batch_size=3).build(default_model_path=str(tiny_teacher))
    scores = reward.score(FOUR)
    assert len(scores) == 4 and all(s in (None, 0.0, 1.0) for s in scores)
    assert reward.score(FOUR) == scores  # greedy: the same verdicts again
    stats = reward.stats
    assert stats.failed == 0 and stats.judged + stats.unparseable == 8
    assert 8 <= stats.requests <= 16  # a judging prompt per item, a parsing prompt per unclear verdict

    # an explicit `model` path wins over the context; unparseable: zero never leaves a row unscored
    zero = LLMJudgeRewardSpec(model=str(tiny_teacher), max_new_tokens=8, batch_size=3, unparseable="zero").build(
        default_model_path="/nonexistent/teacher")
    assert zero.score(FOUR) == [0.0 if s is None else s for s in scores]
