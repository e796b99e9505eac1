"""LLM backend layer: one protocol (``base``) for OpenAI-compatible HTTP, local transformers and vLLM.

Use::

    from safekey.llm import get_backend, ChatRequest, Sampling
    be = get_backend("openai:gpt-4o", concurrency=32)          # or "hf:smollm2-135m", "vllm:/path"
    outs = be.generate([ChatRequest(messages=[{"role": "user", "content": "hi"}], sampling=Sampling(max_tokens=64))])
    print(be.summary())

Backend modules are imported lazily: ``import safekey.llm`` does not import torch, openai or vllm.
"""

from __future__ import annotations

from typing import Any

from .base import Backend, BackendConfig, ChatRequest, Completion, Sampling, parse_spec
from .structured import ParseFailure, extract_json, parse_json


def get_backend(spec: str | BackendConfig, **overrides: Any) -> Backend:
    """``get_backend("openai:gpt-4o", concurrency=32)`` → a ready backend (models load on first use).

    `overrides` are :class:`BackendConfig` fields (``cache=False``, ``base_url=...``,
    ``batch_size=16``...); ``None`` values are ignored so CLI options can be passed through.
    """
    config = parse_spec(spec, **overrides)
    if config.kind == "openai":
        from .openai_api import OpenAIBackend

        return OpenAIBackend(config)
    if config.kind == "hf":
        from .hf import HFBackend

        return HFBackend(config)
    if config.kind == "vllm":
        from .vllm_offline import VLLMBackend

        return VLLMBackend(config)
    raise AssertionError(config.kind)  # parse_spec validated the kind


def prompt_opens_think(backend: Any, messages: list[dict[str, str]]) -> bool | None:
    """Does the backend's rendered prompt (chat template + generation prompt) open a ``<think>``?

    None when the backend cannot show its prompt (an HTTP API renders it server-side). Why: an
    R1-Distill template ends with ``<think>\\n``, so whether an output that holds no tags is
    thinking or answer depends on the prompt, not on the output.
    """
    from ..types import thinking_open

    render = getattr(backend, "render_text", None)
    if render is None:
        return None
    return thinking_open(render(ChatRequest(messages=messages)))


__all__ = [
    "Backend",
    "BackendConfig",
    "ChatRequest",
    "Completion",
    "ParseFailure",
    "Sampling",
    "extract_json",
    "get_backend",
    "parse_json",
    "parse_spec",
    "prompt_opens_think",
]
