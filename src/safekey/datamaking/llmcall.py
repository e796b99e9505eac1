"""Model settings shared by the LLM-backed data-making steps, and the one JSON-call helper.

Every call goes through :mod:`safekey.llm`; a bad reply becomes a :class:`~safekey.store.Failure`
with the model's raw text (retried on the next run), never an exception and never ``eval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..llm import ChatRequest, Completion, ParseFailure, Sampling, get_backend, parse_json
from ..store import Failure

_LATER = ("prefill", "think_budget")
# connection details change how a call is made, not what it returns: kept out of the fingerprint
_TRANSPORT = ("base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "retry_initial_s", "cache", "batch_size")


class ModelSettings(BaseModel):
    """Which model answers a step and how it samples (``kind:model`` as on the CLI)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "hf:smollm2-135m"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(16, ge=1)
    timeout_s: float | None = None
    max_retries: int | None = None
    retry_initial_s: float | None = None
    cache: bool = True
    batch_size: int = Field(16, ge=1, description="records per batch (one generate call, one flush)")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    seed: int | None = None
    prefill: str | None = Field(
        None, description="text that opens the model's reply; the step parses prefill + reply. Steers small "
        "local models into the output format (hf / vLLM continue it; OpenAI-style APIs may not)")

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, seed=self.seed)

    def identity(self) -> dict[str, Any]:
        """What determines the outputs (goes into the stage fingerprint).

        Options added later are left out while unset, so older runs keep their fingerprint.
        """
        unset = {k for k in _LATER if getattr(self, k, None) is None}
        return self.model_dump(exclude=set(_TRANSPORT) | unset)


class TeacherSettings(ModelSettings):
    """A reasoning teacher: optionally with a thinking budget (budget forcing, as in s1).

    With `think_budget` set the reply is made in two calls: the thinking (opened with ``<think>``,
    stopped at ``</think>`` or after `think_budget` tokens), then the answer after a closed
    ``</think>``. Teachers that never close their thinking (small local models) or cost caps then
    still yield the STAR-1 shape; records whose thinking was cut say so in ``think_forced``.
    """

    think_budget: int | None = Field(None, ge=1, description="tokens of thinking before </think> is forced")


_BACKENDS: dict[str, Any] = {}


def backend_for(ms: ModelSettings):
    """One backend per distinct setting per process (the local model loads once for all steps)."""
    key = ms.model_dump_json(include=set(_TRANSPORT) - {"batch_size"} | {"model"})
    if key not in _BACKENDS:
        _BACKENDS[key] = get_backend(
            ms.model, base_url=ms.base_url, api_key_env=ms.api_key_env, concurrency=ms.concurrency,
            timeout_s=ms.timeout_s, max_retries=ms.max_retries, retry_initial_s=ms.retry_initial_s, cache=ms.cache,
        )
    return _BACKENDS[key]


def close_backends() -> None:
    for be in _BACKENDS.values():
        be.close()
    _BACKENDS.clear()


def _requests(prompts: Sequence[tuple[str, str]], sampling: Sampling, prefill: str | None) -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "user", "content": p}], sampling=sampling, prefill=prefill, id=rid)
            for rid, p in prompts]


def generate(ms: ModelSettings, prompts: Sequence[tuple[str, str]], backend=None) -> list[Completion]:
    """[(record id, user prompt)] → completions, same order; each text starts with the prefill."""
    be = backend or backend_for(ms)
    reqs = _requests(prompts, ms.sampling(), ms.prefill)
    comps = be.generate(reqs) if reqs else []
    if ms.prefill:
        comps = [c if c.error is not None else c.model_copy(update={"text": ms.prefill + c.text}) for c in comps]
    return comps


def generate_with_thinking(ms: TeacherSettings, prompts: Sequence[tuple[str, str]], backend=None) -> list[tuple[Completion, bool]]:
    """Teacher replies as (completion, thinking_was_forced); one call each unless `think_budget` is set."""
    if ms.think_budget is None:
        return [(c, False) for c in generate(ms, prompts, backend)]
    opener = ms.prefill or "<think>\n"
    think = ms.sampling().model_copy(update={"max_tokens": ms.think_budget, "stop": ("</think>",)})
    be = backend or backend_for(ms)
    reqs = _requests(prompts, think, opener)
    thoughts = be.generate(reqs) if reqs else []
    out: list[tuple[Completion, bool]] = [(c, False) for c in thoughts]  # failed calls pass through as they are
    live = [k for k, c in enumerate(thoughts) if c.error is None]
    if live:
        answer_reqs = []
        for k in live:
            closed = opener + thoughts[k].text.split("</think>")[0].rstrip() + "\n</think>\n\n"
            answer_reqs.append(reqs[k].model_copy(update={"prefill": closed, "sampling": ms.sampling()}))
        for k, req, c in zip(live, answer_reqs, be.generate(answer_reqs)):
            if c.error is None:
                c = c.model_copy(update={"text": req.prefill + c.text})
            out[k] = (c, thoughts[k].finish_reason == "length")
    return out


def ask_json(ms: ModelSettings, prompts: Sequence[tuple[str, str]], schema: Any, step: str, backend=None) -> list[Any]:
    """Each prompt's reply validated against `schema`, or a Failure ``{step}_call`` / ``{step}_parse``."""
    out: list[Any] = []
    for (rid, _), c in zip(prompts, generate(ms, prompts, backend)):
        if c.error is not None:
            out.append(Failure(rid, f"{step}_call: {c.error}"))
            continue
        res = parse_json(c.text, schema)
        if isinstance(res, ParseFailure):
            out.append(Failure(rid, f"{step}_parse: {res.reason}", raw=c.text))
        else:
            out.append(res)
    return out
