"""llm_judge through the real scoring stage: rows the judge could not reach stay unscored and are
scored by the next run once the endpoint answers; rows already scored are never sent again."""

from __future__ import annotations

import json

import pytest
from test_judge import JudgeServer, scripted_reply

from masters.bank.schema import row_id
from masters.bank.scoring import accuracy_rewards, score_bank, score_key
from masters.bank.store import ResponseBank
from masters.data.types import VQASample
from masters.errors import DataError
from masters.rewards.specs import LLMJudgeRewardSpec

SAMPLES = {f"q{q}": VQASample(id=f"q{q}", images=(), question=f"question {q}", answer=f"answer {q}")
           for q in range(4)}


def make_row(q: int, s: int) -> dict:
    text = f"Response: {'wrong' if s else 'right'} {q}"  # the scripted judge says 0 for 'wrong'
    return {
        "row_id": row_id("teacher", "t0", 2000, f"q{q}", s), "source": "teacher", "teacher": "t0",
        "level_bp": 2000, "question_id": f"q{q}", "sample_index": s, "response_text": text,
        "token_ids": [5, 6, 2], "num_tokens": 3, "truncated": False, "empty": False, "seed": q * 100 + s,
        "generation": json.dumps({"temperature": 1.0}), "stage_hash": "h1",
    }


@pytest.fixture
def server():
    state = {"down": {"question 2", "question 3"}}

    def behaviour(prompt, n):
        if any(f"Question: {q}\n" in prompt for q in state["down"]):
            return 503, "model loading"
        return "ok", scripted_reply(prompt)

    srv = JudgeServer(behaviour)
    srv.state = state
    yield srv
    srv.close()


def test_unreached_rows_stay_unscored_and_the_next_run_scores_only_them(tmp_path, server):
    bank = ResponseBank.open(tmp_path, stage_hash="h", tokenizer_fingerprint="t")
    bank.append([make_row(q, s) for q in range(4) for s in range(2)])
    spec = LLMJudgeRewardSpec(backend="http", base_url=server.base_url, max_retries=1, retry_backoff_s=0.0,
                              give_up_after=0)

    report = score_bank(bank, SAMPLES, [spec], batch_size=3, progress=False)
    assert report.scored == {"llm_judge": 4} and report.unscored == {"llm_judge": 4}
    first = bank.scores(score_key(spec))
    assert sorted(first.values()) == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(DataError, match="4 bank rows have no 'llm_judge' score"):
        accuracy_rewards(bank, [spec])
    sent_first = len(server.requests)
    assert sent_first == 4 + 4 * 2  # 4 answered, 4 refused twice (1 + max_retries)

    server.state["down"] = set()  # the endpoint is back
    report = score_bank(bank, SAMPLES, [spec], progress=False)
    assert report.scored == {"llm_judge": 8} and report.unscored == {"llm_judge": 0}
    second = server.requests[sent_first:]
    assert len(second) == 4 and all("question 2" in r["prompt"] or "question 3" in r["prompt"] for r in second)
    values = accuracy_rewards(bank, [spec])["llm_judge"]
    assert values == {make_row(q, s)["row_id"]: float(s == 0) for q in range(4) for s in range(2)}
    assert {k: values[k] for k in first} == first  # nothing scored before changed or was lost

    report = score_bank(bank, SAMPLES, [spec], progress=False)  # a third run sends nothing
    assert report.unscored == {"llm_judge": 0} and len(server.requests) == sent_first + 4
