"""The one protocol every LLM call in safekey goes through.

Stages build :class:`ChatRequest` objects (messages + optional assistant prefill + explicit
sampling) and hand a batch to a :class:`Backend`; they never know whether an HTTP API, a local
transformers model or vLLM answers. A backend never raises for one bad item: that item's
:class:`Completion` carries ``error`` and the stage records it as a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..types import SafekeyError

BackendKind = Literal["openai", "hf", "vllm"]


class Sampling(BaseModel):
    """Every sampling parameter, explicit and recorded (part of the cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0)
    stop: tuple[str, ...] = ()
    seed: int | None = None


class ChatRequest(BaseModel):
    """One model call. `prefill` is text placed at the start of the assistant turn (attacks)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, str]]
    sampling: Sampling = Sampling()
    prefill: str | None = None
    id: str | None = None  # caller's record id, for logs and error messages only (not in the cache key)
    # extra variables for the model's chat template (e.g. ShieldGemma's `guideline`); sent to an
    # OpenAI-compatible server as vLLM's `chat_template_kwargs`
    template_kwargs: dict[str, Any] = {}
    # report the probability of each of these tokens as the FIRST generated token (guards that are
    # read from their logits, e.g. ShieldGemma's P("Yes")); → Completion.token_probs
    score_tokens: tuple[str, ...] = ()


class Completion(BaseModel):
    """What came back. `text` excludes the prefill. `error` set ⇒ the call failed after retries."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    cached: bool = False
    token_probs: dict[str, float] | None = None  # for ChatRequest.score_tokens: P(token) at the first step

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_failure(self, id: str, **detail: Any):
        """A :class:`safekey.store.Failure` for a failed call, for the stage's failures file."""
        from ..store import Failure

        if self.error is None:
            raise ValueError(f"item {id}: completion did not fail")
        return Failure(id=id, reason=f"llm: {self.error}", raw=self.text or None, detail=detail)


class BackendConfig(BaseModel):
    """How to reach a model. On the CLI, ``kind:model`` (``openai:gpt-4o``, ``hf:smollm2-135m``)."""

    model_config = ConfigDict(extra="forbid")

    kind: BackendKind = "hf"
    model: str = "smollm2-135m"
    # openai-compatible HTTP
    base_url: str | None = None  # default: $OPENAI_BASE_URL or the OpenAI API
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable; the key itself is never stored
    extra_headers: dict[str, str] = {}
    api_version: str | None = None  # Azure OpenAI
    timeout_s: float = 120.0  # per read (httpx); a server that keeps sending bytes never trips it…
    request_deadline_s: float | None = None  # …so one attempt also has an overall deadline (default: 2 × timeout_s)
    max_retries: int = 6
    max_retry_wait_s: float = 600.0  # total time one item may spend waiting between retries (Retry-After included)
    retry_initial_s: float = 1.0  # first backoff (exponential, with jitter) when no Retry-After is given
    retry_max_s: float = 60.0  # cap of one backoff; a server's Retry-After is honoured up to 300 s
    # how a prefill reaches the server: "vllm" (trailing assistant message + continue_final_message,
    # also SGLang / llama.cpp chat), "deepseek" (assistant message with prefix=True, DeepSeek beta API),
    # "none" (the endpoint cannot continue a message: such items fail with a clear error)
    prefill_style: Literal["vllm", "deepseek", "none"] = "vllm"
    extra_body: dict[str, Any] = {}  # vendor fields sent with every request (e.g. {"top_k": 20}); part of the cache key
    concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    # local
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    # cache
    cache: bool = True
    cache_dir: str | None = None  # default: SAFEKEY_HOME/llm-cache

    def label(self) -> str:
        return f"{self.kind}:{self.model}"


def parse_spec(spec: str | BackendConfig, **overrides: Any) -> BackendConfig:
    """``"openai:gpt-4o"`` / ``"hf:smollm2-135m"`` / ``"vllm:/path"`` → :class:`BackendConfig`."""
    if isinstance(spec, BackendConfig):
        return spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if ":" not in spec:
        raise SafekeyError(f"model spec {spec!r} must look like kind:model (openai:gpt-4o, hf:smollm2-135m, vllm:/path)")
    kind, model = spec.split(":", 1)
    if kind not in ("openai", "hf", "vllm"):
        raise SafekeyError(f"unknown backend {kind!r} in {spec!r}; use openai, hf or vllm")
    if not model:
        raise SafekeyError(f"model spec {spec!r} names no model")
    return BackendConfig(kind=kind, model=model, **{k: v for k, v in overrides.items() if v is not None})


@runtime_checkable
class Backend(Protocol):
    config: BackendConfig

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer a batch, same order. Per-item failures come back as ``Completion(error=...)``."""
        ...

    def close(self) -> None: ...
