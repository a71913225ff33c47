"""The llm_judge accuracy reward: the two-step chain with a scripted adapter and a loopback server."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from masters.errors import MastersError
from masters.interfaces import AccuracyReward, ScoredResponse
from masters.rewards.judge_prompts import (
    DEFAULT_JUDGE_PROMPT,
    parse_bare_verdict,
    parse_tagged_verdict,
    render,
)
from masters.rewards.specs import BUILTIN_REWARD_SPECS, LLMJudgeRewardSpec

# -- what the judge "thinks" of each response (first reply, reply to the parsing prompt) ------------

CLEAR_1 = ScoredResponse(question="What colour is the circle?", response="It is red.", reference="red")
CLEAR_0 = ScoredResponse(question="What colour is the circle?", response="blue", reference="red")
UNCLEAR = ScoredResponse(question="How many squares?", response="three, I think", reference="3")
HOPELESS = ScoredResponse(question="How many squares?", response="zzz qqq", reference="3")
FOUR = [CLEAR_1, CLEAR_0, UNCLEAR, HOPELESS]

SCRIPT = {
    "It is red.": ("The response says red, like the reference. <answer>1</answer>", None),
    "blue": ("Blue is not red. <answer>0</answer>", None),
    "three, I think": ("Three is the same number as 3, so the response looks right to me.", "1"),
    "zzz qqq": ("I am not sure what this means. <answer>maybe</answer>", "It is hard to say: 0 or 1."),
}


def scripted_reply(prompt: str) -> str:
    """The judge's reply to one prompt, looked up from the response (or judgment) it quotes."""
    if prompt.startswith("Below is a grader's judgement"):
        for first, second in SCRIPT.values():
            if first in prompt:
                assert second is not None, "a clear verdict must not reach the parsing prompt"
                return second
        raise AssertionError(f"unscripted parsing prompt: {prompt!r}")
    for response, (first, _) in SCRIPT.items():
        if f"Response: {response}\n" in prompt:
            return first
    if "Response: " in prompt:  # anything else the tests send: a clear verdict from its marker
        return "<answer>0</answer>" if "Response: wrong" in prompt else "<answer>1</answer>"
    raise AssertionError(f"unscripted prompt: {prompt!r}")


class ScriptedAdapter:
    """Adapter stand-in: generate() 'answers' each text-only sample from the script."""

    def __init__(self):
        self.calls: list[dict] = []
        self._texts: list[str] = []

    def generate(self, samples, *, max_new_tokens=256, temperature=1.0, **kw):
        self.calls.append({"n": len(samples), "max_new_tokens": max_new_tokens, "temperature": temperature,
                           "images": [s.images for s in samples], "kw": kw})
        ids = []
        for sample in samples:
            self._texts.append(scripted_reply(sample.question))
            ids.append([len(self._texts) - 1])
        return ids

    def decode(self, responses):
        return [self._texts[r[0]] for r in responses]


# -- the prompts and parsers ------------------------------------------------------------------------


@pytest.mark.parametrize("text, verdict", [
    ("Right. <answer>1</answer>", 1), ("<answer> 0 </answer>", 0), ("<ANSWER>**1**</ANSWER>", 1),
    ("<answer>1.0</answer>", 1), ("<answer>1</answer> ... <answer>1</answer>", 1),
    ("<answer>1</answer> no wait <answer>0</answer>", None), ("<answer>yes</answer>", None),
    ("score: 1", None), ("<answer>1", None), ("<answer>10</answer>", None), ("", None),
])
def test_tagged_verdict_is_clear_only_for_one_bare_score(text, verdict):
    assert parse_tagged_verdict(text) == verdict


@pytest.mark.parametrize("text, verdict", [
    ("1", 1), (" 0\n", 0), ("**1**", 1), ("'0'.", 0), ("<answer>1</answer>", 1),
    ("The grader said it is correct, so 1.", 1), ("0 or 1", None), ("I cannot tell.", None),
    ("10", None), ("", None),
])
def test_parsing_reply_gives_a_bare_score_or_none(text, verdict):
    assert parse_bare_verdict(text) == verdict


def test_render_fills_known_slots_and_leaves_other_braces():
    out = render("Q {question} {json: 1} {unknown} R {response}", question="a {b}", response="}{")
    assert out == "Q a {b} {json: 1} {unknown} R }{"


def test_default_prompt_asks_for_a_reason_then_the_tagged_score():
    prompt = render(DEFAULT_JUDGE_PROMPT, question="Q?", reference="red", response="blue", choices="")
    assert "Reference answer: red" in prompt and "Response: blue" in prompt
    assert "<answer>1</answer>" in prompt and "<answer>0</answer>" in prompt and "explain" in prompt


# -- the spec -------------------------------------------------------------------------------------


def test_spec_is_registered_and_validates_backend_fields():
    assert LLMJudgeRewardSpec in BUILTIN_REWARD_SPECS
    assert LLMJudgeRewardSpec().backend == "adapter"
    with pytest.raises(ValidationError, match="needs base_url"):
        LLMJudgeRewardSpec(backend="http")
    with pytest.raises(ValidationError, match="only apply to backend http"):
        LLMJudgeRewardSpec(base_url="http://127.0.0.1:8000/v1")
    with pytest.raises(ValidationError, match="not the key itself"):
        LLMJudgeRewardSpec(backend="http", base_url="http://127.0.0.1:8000/v1", api_key_env="sk-abc123-xyz")
    with pytest.raises(ValidationError, match="API root"):
        LLMJudgeRewardSpec(backend="http", base_url="http://127.0.0.1:8000/v1/chat/completions")
    with pytest.raises(ValidationError, match="no {response} slot"):
        LLMJudgeRewardSpec(judge_prompt="Is {reference} right?")
    with pytest.raises(ValidationError, match="no {judgment} slot"):
        LLMJudgeRewardSpec(parse_prompt="0 or 1?")
    with pytest.raises(ValidationError, match="extra"):
        LLMJudgeRewardSpec(api_key="sk-secret")


def test_adapter_judge_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(MastersError, match="no model") as err:
        LLMJudgeRewardSpec().build()
    assert "default_model_path" in err.value.fix
    with pytest.raises(MastersError, match="not found"):
        LLMJudgeRewardSpec().build(default_model_path=str(tmp_path / "missing"))


# -- the chain through a scripted adapter ---------------------------------------------------------


def test_adapter_judge_scores_the_four_cases():
    fake = ScriptedAdapter()
    reward = LLMJudgeRewardSpec(max_new_tokens=64).build(judge_adapter=fake)
    assert isinstance(reward, AccuracyReward)
    assert reward.score(FOUR) == [1.0, 0.0, 1.0, None]
    # one batched call for the judging prompts, one for the two unclear verdicts; greedy, text only
    assert [c["n"] for c in fake.calls] == [4, 2]
    assert all(c["temperature"] == 0 and c["max_new_tokens"] == 64 for c in fake.calls)
    assert all(images == () for c in fake.calls for images in c["images"])
    assert reward.stats.as_dict() == {"judged": 3, "second_prompt": 1, "unparseable": 1, "failed": 0,
                                      "empty": 0, "requests": 6, "retries": 0}


def test_unparseable_policy_zero_and_empty_responses_skip_the_judge():
    fake = ScriptedAdapter()
    reward = LLMJudgeRewardSpec(unparseable="zero", batch_size=2).build(judge_adapter=fake)
    empty = ScoredResponse(question="Q?", response="  ", reference="red")
    assert reward.score([HOPELESS, empty, CLEAR_1]) == [0.0, 0.0, 1.0]
    assert [c["n"] for c in fake.calls] == [2, 1]  # batch_size 2; the empty response never asked
    assert reward.stats.unparseable == 1 and reward.stats.empty == 1
    assert reward.score([]) == []


def test_choices_reach_the_judge():
    prompts = []

    class Recorder(ScriptedAdapter):
        def generate(self, samples, **kw):
            prompts.extend(s.question for s in samples)
            return super().generate(samples, **kw)

    item = ScoredResponse(question="Which shape?", response="(B)", reference="B", choices=("circle", "square"))
    assert LLMJudgeRewardSpec().build(judge_adapter=Recorder()).score([item]) == [1.0]
    assert "Question: Which shape?\nOptions: A. circle; B. square\nReference answer: B" in prompts[0]


# -- the chain through an OpenAI-compatible server on loopback -----------------------------------


class JudgeServer:
    """A tiny /v1/chat/completions server; ``behaviour(prompt, n)`` decides each reply.

    ``n`` counts the requests so far carrying the same prompt (1 for the first).
    """

    def __init__(self, behaviour=None):
        self.behaviour = behaviour or (lambda prompt, n: ("ok", scripted_reply(prompt)))
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                prompt = body["messages"][0]["content"]
                with server.lock:
                    n = 1 + sum(r["prompt"] == prompt for r in server.requests)
                    server.requests.append({"path": self.path, "prompt": prompt, "body": body,
                                            "auth": self.headers.get("Authorization")})
                kind, value = server.behaviour(prompt, n)
                try:
                    if kind == "sleep":
                        time.sleep(value)
                        kind, value = "ok", scripted_reply(prompt)
                    if kind == "ok":
                        self._send(200, {"id": "x", "object": "chat.completion", "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": value}, "finish_reason": "stop"}]})
                    else:
                        self._send(kind, {"error": {"message": value, "type": "error", "code": kind}},
                                   {"Retry-After": "0"} if kind == 429 else {})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _send(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(behaviour=None):
        servers.append(JudgeServer(behaviour))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def http_spec(base_url, **kw):
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("max_retries", 2)
    kw.setdefault("retry_backoff_s", 0.5)
    return LLMJudgeRewardSpec(backend="http", base_url=base_url, model_name="judge-model", **kw)


def test_http_judge_scores_the_four_cases(server, monkeypatch):
    srv = server()
    monkeypatch.setenv("TEST_JUDGE_KEY", "secret-123")
    reward = http_spec(srv.base_url, api_key_env="TEST_JUDGE_KEY", max_new_tokens=77).build()
    assert reward.score(FOUR) == [1.0, 0.0, 1.0, None]
    assert len(srv.requests) == 6
    first = srv.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret-123"
    assert first["body"]["model"] == "judge-model" and first["body"]["temperature"] == 0
    assert first["body"]["max_tokens"] == 77
    assert reward.stats.as_dict() == {"judged": 3, "second_prompt": 1, "unparseable": 1, "failed": 0,
                                      "empty": 0, "requests": 6, "retries": 0}


def test_http_500_then_success_is_retried_with_backoff(server):
    waits = []
    srv = server(lambda prompt, n: (500, "boom") if n == 1 else (429, "slow down") if n == 2 else
                 ("ok", scripted_reply(prompt)))
    reward = http_spec(srv.base_url, max_retries=3, concurrency=1).build(sleep=waits.append)
    assert reward.score([CLEAR_1, CLEAR_0]) == [1.0, 0.0]
    assert len(srv.requests) == 6 and reward.stats.retries == 4 and reward.stats.failed == 0
    assert waits == [0.5, 1.0, 0.5, 1.0]  # doubling from retry_backoff_s, per prompt


def test_http_persistent_error_leaves_only_that_item_unscored(server, caplog):
    waits = []
    srv = server(lambda prompt, n: (503, "overloaded") if "blue" in prompt else ("ok", scripted_reply(prompt)))
    reward = http_spec(srv.base_url).build(sleep=waits.append)
    with caplog.at_level(logging.WARNING, logger="masters.rewards.judge"):
        assert reward.score(FOUR) == [1.0, None, 1.0, None]
    assert sum("Response: blue\n" in r["prompt"] for r in srv.requests) == 3  # 1 + max_retries
    assert waits == [0.5, 1.0]
    assert reward.stats.failed == 1 and reward.stats.judged == 2 and reward.stats.unparseable == 1
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert srv.base_url + "/chat/completions" in warning and "HTTP 503: overloaded" in warning


def test_http_timeout_is_retried_then_unscored(server):
    srv = server(lambda prompt, n: ("sleep", 1.5) if "It is red." in prompt else ("ok", scripted_reply(prompt)))
    reward = http_spec(srv.base_url, timeout_s=0.3, max_retries=1).build(sleep=lambda s: None)
    start = time.monotonic()
    assert reward.score(FOUR) == [None, 0.0, 1.0, None]
    assert time.monotonic() - start < 5
    assert sum("It is red." in r["prompt"] for r in srv.requests) == 2
    assert reward.stats.failed == 1 and reward.stats.retries == 1


def test_http_parsing_step_unreachable_leaves_the_item_unscored(server):
    srv = server(lambda prompt, n: (502, "bad gateway") if prompt.startswith("Below is") else
                 ("ok", scripted_reply(prompt)))
    reward = http_spec(srv.base_url, max_retries=0).build()
    assert reward.score([CLEAR_1, UNCLEAR]) == [1.0, None]
    assert reward.stats.failed == 1 and reward.stats.second_prompt == 0


def test_http_unreachable_endpoint_gives_up_after_failures_in_a_row(server):
    srv = server(lambda prompt, n: (503, "down"))
    reward = http_spec(srv.base_url, max_retries=1, concurrency=1, give_up_after=3).build(sleep=lambda s: None)
    items = [ScoredResponse(question=f"q{i}", response=f"r{i}", reference="x") for i in range(10)]
    assert reward.score(items) == [None] * 10
    assert len(srv.requests) == 3 * 2 and reward.stats.failed == 10
    closed = srv.base_url
    srv.close()  # nothing listens there any more: refused connections are retried too, then None
    reward = http_spec(closed, max_retries=1, give_up_after=0).build(sleep=lambda s: None)
    assert reward.score(FOUR[:2]) == [None, None] and reward.stats.retries == 2


@pytest.mark.parametrize("code, fix", [(401, "API key"), (404, "model_name"), (400, "max_new_tokens")])
def test_http_4xx_is_a_clear_error_naming_endpoint_and_fix(server, code, fix):
    srv = server(lambda prompt, n: (code, "The model `judge-model` does not exist."))
    with pytest.raises(MastersError) as err:
        http_spec(srv.base_url).build(sleep=lambda s: None).score([CLEAR_1])
    assert srv.base_url in err.value.where and f"HTTP {code}" in err.value.message
    assert "does not exist" in err.value.message and fix in err.value.fix
    assert len(srv.requests) == 1  # never retried


def test_http_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TEST_JUDGE_KEY", raising=False)
    with pytest.raises(MastersError, match="TEST_JUDGE_KEY"):
        http_spec("http://127.0.0.1:9/v1", api_key_env="TEST_JUDGE_KEY").build()


def test_passes_the_accuracy_reward_contract_with_a_scripted_judge():
    """What tests/rewards/test_rewards_conformance.py checks, with the judge the context provides."""
    from test_rewards_conformance import ITEMS

    reward = LLMJudgeRewardSpec().build(judge_adapter=ScriptedAdapter())
    assert reward.score([]) == []
    scores = reward.score(ITEMS)
    assert len(scores) == len(ITEMS) and all(s in (None, 0.0, 1.0) for s in scores)
    assert reward.score(ITEMS) == scores and reward.score(ITEMS[::-1]) == scores[::-1]


def test_judge_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, masters.rewards.specs, masters.rewards.judge; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
