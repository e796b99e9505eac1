"""OpenAI-compatible HTTP backend: OpenAI, Azure OpenAI, DeepSeek, vLLM serve, SGLang, llama.cpp.

Why it looks like this:

* ``generate()`` is synchronous for the stages; inside, one event loop keeps up to
  ``config.concurrency`` requests in flight, optionally throttled to ``requests_per_minute`` /
  ``tokens_per_minute`` (aiolimiter leaky buckets; tokens are estimated as prompt chars / 4 +
  max_tokens, since the true count is only known afterwards).
* Retries are ours (tenacity; the openai client runs with ``max_retries=0``) so that we see every
  attempt and the server's ``Retry-After`` / ``retry-after-ms``: retried are 408/409/429/5xx,
  timeouts, dropped connections and unparseable bodies, with exponential backoff + jitter; never
  retried are the other 4xx. An authentication failure (401/403) stops the whole batch with one
  :class:`SafekeyError` naming the environment variable (never the key).
* The key is read from the environment variable named in the config, sent only in the auth
  header, and scrubbed from every error text we produce.

Wire details worth knowing:

* ``repetition_penalty`` is not an OpenAI parameter; it is sent in the body (vLLM/SGLang name)
  only when != 1.0, so plain OpenAI keeps working for the default. llama.cpp calls it
  ``repeat_penalty``: pass ``extra_body={"repeat_penalty": 1.2}`` there.
* A prefill is sent as a trailing assistant message. ``prefill_style="vllm"`` adds
  ``continue_final_message=true, add_generation_prompt=false`` (vLLM chat API), so the model
  continues that message; ``"deepseek"`` marks it ``prefix: true`` (DeepSeek beta base URL).
  Servers answer with the continuation only, which is what ``Completion.text`` holds.
* A reply with ``reasoning_content`` (DeepSeek-R1 API, vLLM reasoning parsers) is rebuilt as
  ``"<think>\\n{reasoning}\\n</think>\\n\\n{content}"`` — the record shape every stage reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import math
import os
import time
import urllib.parse
from typing import Any

import httpx2
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..types import SafekeyError
from .base import BackendConfig, ChatRequest, Completion
from .core import BaseBackend, OnResult

log = logging.getLogger("safekey.llm.openai")

MAX_RETRY_AFTER_S = 300.0


class _Retryable(Exception):
    """A failed attempt worth another try; `retry_after` is the server's hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Fatal(Exception):
    """Auth failure: no item can succeed, so the batch stops."""


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI), ``retry-after`` seconds or an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        dt = email.utils.parsedate_to_datetime(ra) if ra else None
        return max(0.0, dt.timestamp() - time.time()) if dt else None


def _first_token_probs(choice: dict[str, Any], asked: Any) -> dict[str, float] | None:
    """P(token) at the first generated position from an OpenAI-style ``logprobs`` object
    (``content[0].top_logprobs``); a token outside the top-k gets probability 0."""
    if not asked:
        return None
    try:
        top = choice["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    return {str(t["token"]): math.exp(float(t["logprob"])) for t in top}


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    return str(e.message)[:300]


def endpoint_identity(base_url: str | None) -> str:
    """``scheme://host:port/path`` of an endpoint, lower-cased host, credentials, query and fragment
    dropped: what tells two servers apart without carrying a secret into a cache key or a file."""
    if not base_url:
        return "https://api.openai.com/v1"
    u = urllib.parse.urlsplit(base_url.strip())
    try:
        port = u.port
    except ValueError:
        port = None
    scheme = (u.scheme or "http").lower()
    port = port or {"http": 80, "https": 443}.get(scheme)
    host = (u.hostname or "").lower()
    return f"{scheme}://{host}{f':{port}' if port else ''}{u.path.rstrip('/')}"


class OpenAIBackend(BaseBackend):
    """``openai:MODEL``; for Azure set ``api_version`` and ``base_url`` to the resource endpoint."""

    kind = "openai"

    def model_id(self) -> str:
        """The served name *and* the endpoint (scheme, host, port, path; never credentials or query):
        two servers that serve one name (vLLM ``--served-model-name``, a proxy, two checkpoints served
        one after the other on another port) must not answer from each other's cache."""
        mid = f"{self.config.model}@{endpoint_identity(self._base_url())}"
        if self.config.extra_body:
            return f"{mid}|{json.dumps(self.config.extra_body, sort_keys=True)}"
        return mid

    # -- client ------------------------------------------------------------------------------
    def _key(self) -> str:
        env = self.config.api_key_env
        if not env:
            return "EMPTY"  # local servers without auth (vLLM serve, llama.cpp)
        key = os.environ.get(env)
        if not key:
            raise SafekeyError(
                f"{self.config.label()}: no API key: set the environment variable {env} "
                f"(or api_key_env='' for a local server without auth)"
            )
        return key

    def _base_url(self) -> str | None:
        return self.config.base_url or os.environ.get("OPENAI_BASE_URL") or None

    def _client(self, key: str) -> openai.AsyncOpenAI:
        c = self.config
        common = dict(api_key=key, max_retries=0, timeout=c.timeout_s, default_headers=c.extra_headers or None)
        if c.api_version:
            if not self._base_url():
                raise SafekeyError(f"{c.label()}: Azure OpenAI (api_version set) needs base_url = the resource endpoint")
            return openai.AsyncAzureOpenAI(azure_endpoint=self._base_url(), api_version=c.api_version, **common)
        return openai.AsyncOpenAI(base_url=self._base_url(), **common)

    def _where(self) -> str:
        return self._base_url() or "api.openai.com"

    # -- request building --------------------------------------------------------------------
    def request_body(self, req: ChatRequest) -> dict[str, Any]:
        """The JSON body sent for `req` (without the model's auth); public so tests can assert it."""
        s = req.sampling
        messages: list[dict[str, Any]] = [dict(m) for m in req.messages]
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if req.prefill:
            style = self.config.prefill_style
            if style == "none":
                raise ValueError("prefill requested but this endpoint is configured with prefill_style='none'")
            if style == "vllm":
                messages.append({"role": "assistant", "content": req.prefill})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            else:
                messages.append({"role": "assistant", "content": req.prefill, "prefix": True})
        if req.template_kwargs:
            body["chat_template_kwargs"] = dict(req.template_kwargs)  # vLLM / SGLang
        if req.score_tokens:
            body["logprobs"] = True
            body["top_logprobs"] = 20
        body.update(self.config.extra_body)
        return body

    @staticmethod
    def _estimate_tokens(body: dict[str, Any]) -> int:
        chars = sum(len(str(m.get("content", ""))) for m in body["messages"])
        return chars // 4 + int(body.get("max_tokens") or 0)

    # -- one attempt -------------------------------------------------------------------------
    async def _attempt(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> Completion:
        try:
            # the client's low-level post: same auth, Azure routing and error classes, but none of the
            # per-call TypedDict transform / response models (a third of the client CPU per request)
            raw = await client.post("/chat/completions", body=body, cast_to=httpx2.Response)
        except openai.APIStatusError as e:
            status = e.status_code
            msg = _server_message(e)
            if status in (401, 403):
                raise _Fatal(
                    f"authentication failed (HTTP {status}) at {self._where()}: check the API key in ${self.config.api_key_env}"
                    f" and its access to model {self.config.model!r}; server said: {msg}"
                ) from None
            if status in (408, 409, 429) or status >= 500:
                raise _Retryable(f"HTTP {status}: {msg}", _retry_after(e.response.headers)) from None
            raise ValueError(f"HTTP {status}: {msg}") from None  # other 4xx: our request is wrong; retrying cannot help
        except openai.APITimeoutError:
            raise _Retryable(f"timeout after {self.config.timeout_s:g} s") from None
        except openai.APIConnectionError as e:
            cause = e.__cause__
            raise _Retryable(f"connection error ({type(cause).__name__ if cause else 'unknown'})") from None
        text = raw.text
        try:
            data = json.loads(text)
            choice = data["choices"][0]
            msg = choice["message"]
            content = msg.get("content") or ""
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(f"unparseable response body ({len(text)} bytes): {text[:80]!r}") from None
        if reasoning:
            content = f"<think>\n{reasoning}\n</think>\n\n{content}"
        return Completion(
            text=content,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            token_probs=_first_token_probs(choice, body.get("logprobs")),
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        ra = getattr(exc, "retry_after", None)
        if ra is not None:
            if ra > MAX_RETRY_AFTER_S:
                log.warning("%s: server asked to wait %.0f s; waiting %.0f s", self.config.label(), ra, MAX_RETRY_AFTER_S)
            wait = min(ra, MAX_RETRY_AFTER_S)
        else:
            wait = self._backoff(state)
        return max(0.0, min(wait, self.config.max_retry_wait_s - state.idle_for))  # never past the item's budget

    def _budget_spent(self, state: RetryCallState) -> bool:
        """Stop retrying an item once it has waited its whole `max_retry_wait_s`."""
        return state.idle_for >= self.config.max_retry_wait_s

    async def _attempt_with_deadline(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> Completion:
        deadline = self.config.request_deadline_s or 2 * self.config.timeout_s
        try:
            return await asyncio.wait_for(self._attempt(client, body), timeout=deadline)
        except TimeoutError:
            raise _Retryable(f"no complete response within the {deadline:g} s request deadline") from None

    # -- the batch ---------------------------------------------------------------------------
    async def _arun(self, requests: list[ChatRequest], on_result: OnResult, key: str) -> list[Completion]:
        from aiolimiter import AsyncLimiter

        c = self.config
        self._backoff = wait_exponential_jitter(initial=c.retry_initial_s, max=c.retry_max_s, jitter=c.retry_initial_s)
        sem = asyncio.Semaphore(max(1, c.concurrency))
        rpm = tpm = None
        if c.requests_per_minute:
            period = max(1.0, 60.0 / c.requests_per_minute)  # a bucket of about one second's worth: smooth, no minute-long burst
            rpm = AsyncLimiter(c.requests_per_minute * period / 60.0, period)
        if c.tokens_per_minute:
            tpm = AsyncLimiter(c.tokens_per_minute, 60.0)
        fatal: list[str] = []
        self._waits: dict[int, list[float]] = {}

        def scrub(text: str) -> str:
            return text.replace(key, "***") if key and key != "EMPTY" else text

        async def one(j: int, req: ChatRequest) -> Completion:
            async with sem:
                if fatal:
                    return Completion(error=fatal[0])
                try:
                    body = self.request_body(req)
                except ValueError as e:
                    return self._finish(j, Completion(error=scrub(str(e))), on_result)
                attempts = 0
                try:
                    async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(c.max_retries + 1) | self._budget_spent,
                        wait=self._wait,
                        retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                        reraise=True,
                        before_sleep=lambda st, _j=j: self._before_sleep(st, req, scrub, _j),
                    ):
                        with attempt:
                            attempts += 1
                            if fatal:
                                return Completion(error=fatal[0])
                            if rpm is not None:
                                await rpm.acquire()
                            if tpm is not None:
                                await tpm.acquire(min(self._estimate_tokens(body), c.tokens_per_minute))
                            comp = await self._attempt_with_deadline(client, body)
                except _Retryable as e:
                    waited = sum(self._waits.pop(j, []))
                    budget = (f"; waited {waited:.0f} s, the whole {c.max_retry_wait_s:g} s retry budget"
                              if waited >= c.max_retry_wait_s - 1e-6 else "")
                    if budget:
                        self._count("retry_budget_exhausted")
                    comp = Completion(error=scrub(f"gave up after {attempts} attempts: {e.reason}{budget}"))
                except _Fatal as e:
                    if not fatal:
                        fatal.append(scrub(str(e)))
                    return Completion(error=fatal[0])
                except ValueError as e:
                    comp = Completion(error=scrub(str(e)))
                return self._finish(j, comp, on_result)

        client = self._client(key)
        try:
            results = await asyncio.gather(*(one(j, r) for j, r in enumerate(requests)))
        finally:
            await client.close()
        if fatal:
            done = sum(1 for r in results if r.ok)
            raise SafekeyError(f"{c.label()}: {fatal[0]} ({done} of {len(requests)} items had finished and are cached)")
        return list(results)

    def _finish(self, j: int, comp: Completion, on_result: OnResult) -> Completion:
        on_result(j, comp)
        return comp

    def _before_sleep(self, state: RetryCallState, req: ChatRequest, scrub: Any, j: int = -1) -> None:
        self._count("retries")
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self._waits.setdefault(j, []).append(wait)
        log.debug("%s item %s: attempt %d failed (%s); retrying in %.2f s", self.config.label(), req.id or "-",
                  state.attempt_number, scrub(str(exc)), wait)

    def _run(self, requests: list[ChatRequest], on_result: OnResult) -> list[Completion]:
        key = self._key()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._arun(requests, on_result, key))
        # called from inside a running loop (a notebook, an async app): run ours in a worker thread
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, self._arun(requests, on_result, key)).result()


def list_models(config: BackendConfig) -> list[str]:
    """Model ids the endpoint serves (GET /models); a quick connectivity and auth check."""
    be = OpenAIBackend(config)
    key = be._key()

    async def go() -> list[str]:
        client = be._client(key)
        try:
            page = await client.models.list()
            return [m.id for m in page.data]
        except openai.APIStatusError as e:
            raise SafekeyError(f"{config.label()}: HTTP {e.status_code} from {be._where()}: {_server_message(e).replace(key, '***')}") from None
        except openai.APIConnectionError:
            raise SafekeyError(f"{config.label()}: cannot connect to {be._where()}") from None
        finally:
            await client.close()

    return asyncio.run(go())
