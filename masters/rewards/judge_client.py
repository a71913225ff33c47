"""A small client for OpenAI-compatible chat endpoints (a vLLM server, ...), stdlib only.

``ChatClient.complete(prompt)`` POSTs ``{base_url}/chat/completions`` and returns the reply text.
Transient failures (HTTP 429 and 5xx, refused or dropped connections, timeouts) are retried with
exponential backoff and then raised as :class:`JudgeUnavailable`, which the judge turns into
"unscored, retry on the next run". Any other 4xx means the request itself is wrong (unknown model,
bad key, bad URL): retrying cannot help, so it raises a :class:`~masters.errors.MastersError` that
names the endpoint and the fix.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from masters.errors import MastersError

__all__ = ["ChatClient", "JudgeUnavailable"]

log = logging.getLogger("masters.rewards.judge")

_MAX_BACKOFF_S = 60.0
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


class JudgeUnavailable(Exception):
    """The endpoint did not answer usefully after every retry (the item stays unscored)."""


class ChatClient:
    """One endpoint, one model. Thread-safe: each call opens its own connection."""

    def __init__(self, base_url: str, *, model_name: str | None = None, api_key_env: str | None = None,
                 timeout_s: float = 60.0, max_retries: int = 3, retry_backoff_s: float = 1.0,
                 max_tokens: int = 256, temperature: float = 0.0, sleep: Any = time.sleep):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model_name
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self._key: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise MastersError(f"the environment variable {api_key_env} holding the judge's API key is not set",
                                   where=f"reward llm_judge ({self.url})",
                                   fix=f"export {api_key_env}=<key>, or set api_key_env: null for a server "
                                   "without authentication")
            self._key = key

    # -- one completion ------------------------------------------------------------------------
    def complete(self, prompt: str) -> str:
        """The reply to one user message; retries transient failures, then raises JudgeUnavailable."""
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}],
                                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.model_name:
            body["model"] = self.model_name
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
            wait = None
            try:
                return self._post(data)
            except urllib.error.HTTPError as exc:
                detail = _body_excerpt(exc)
                if exc.code != 429 and exc.code < 500:
                    raise self._request_error(exc.code, detail) from None
                last = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
                wait = _retry_after(exc)
            except _TRANSIENT as exc:
                last = _describe(exc)
            except _BadReply as exc:
                last = str(exc)
            if attempt < self.max_retries:
                backoff = self.retry_backoff_s * 2 ** attempt
                self._sleep(min(_MAX_BACKOFF_S, max(backoff, wait or 0.0)))
        raise JudgeUnavailable(f"{self.url}: {last} (after {self.max_retries + 1} attempts)")

    def _post(self, data: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with self._lock:
            self.requests += 1
        with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
            raw = reply.read()
        try:
            payload = json.loads(raw.decode("utf-8"))
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _BadReply(f"reply is not an OpenAI chat completion: {raw[:200]!r}") from None
        if not isinstance(content, str):  # some servers send null content for an empty reply
            content = "" if content is None else str(content)
        return content

    def _request_error(self, code: int, detail: str) -> MastersError:
        if code in (401, 403):
            fix = (f"check the API key in ${self.api_key_env}" if self.api_key_env else
                   "the server wants an API key: put it in an environment variable and set api_key_env to its name")
        elif code == 404:
            fix = ("check base_url (it should end before /chat/completions, e.g. http://host:8000/v1) and "
                   f"model_name ({self.model_name!r}; GET {self.url.rsplit('/chat/', 1)[0]}/models lists "
                   "the served names)")
        else:
            fix = (f"check model_name ({self.model_name!r}) against GET "
                   f"{self.url.rsplit('/chat/', 1)[0]}/models, and that max_new_tokens ({self.max_tokens}) "
                   "fits the served model's context")
        return MastersError(f"the judge endpoint refused the request: HTTP {code}" + (f": {detail}" if detail else ""),
                            where=f"reward llm_judge ({self.url})", fix=fix)


class _BadReply(Exception):
    """A 2xx reply that is not a chat completion (a proxy page, a truncated body): retried."""


def _body_excerpt(exc: urllib.error.HTTPError, limit: int = 300) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only decoration for the message
        return ""
    try:  # OpenAI / vLLM errors: {"error": {"message": ...}} or {"message": ...}
        obj = json.loads(text)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        text = err.get("message", text) if isinstance(err, dict) else str(err)
    except ValueError:
        pass
    text = " ".join(str(text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
