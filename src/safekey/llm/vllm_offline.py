"""vLLM offline backend (``LLM.generate``), for GPU runs of generation-heavy evals.

vLLM is an optional extra (it pins its own transformers; install it in a separate environment).
Two decisions make it agree with the ``hf`` backend:

* Prompts are rendered by the same code as ``hf`` (chat template, prefill, one BOS) and passed as
  token ids, so both backends see identical tokens.
* Sampling is explicit: ``SamplingParams`` carries every parameter and the engine is built with
  ``generation_config="vllm"``, so the checkpoint's generation_config.json cannot silently replace
  our defaults (vLLM's "auto" would).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..types import SafekeyError
from .base import BackendConfig, ChatRequest, Completion, Sampling
from .core import BaseBackend, OnResult, local_model_id
from .hf import HFBackend

log = logging.getLogger("safekey.llm.vllm")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise SafekeyError(
            "the vllm backend needs the vllm package, which is not installed here. Install it in its own "
            "environment (pip install 'safekey[vllm]'; it pins its own transformers), or run `vllm serve MODEL` "
            "and use the openai backend: --model openai:MODEL --base-url http://host:8000/v1"
        ) from None
    return vllm


def sampling_params(vllm: Any, s: Sampling, logprobs: int | None = None) -> Any:
    """Every field explicit; greedy is temperature 0 (vLLM then ignores top_p/top_k). `logprobs`:
    that many top log-probabilities per generated token (for ChatRequest.score_tokens)."""
    return vllm.SamplingParams(
        logprobs=logprobs,
        n=1,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=-1,
        min_p=0.0,
        max_tokens=s.max_tokens,
        repetition_penalty=s.repetition_penalty,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        stop=list(s.stop) or None,
        seed=s.seed,
        skip_special_tokens=True,
    )


class VLLMBackend(BaseBackend):
    """``vllm:MODEL`` (local folder, alias or hub id)."""

    kind = "vllm"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self._renderer = HFBackend(config)  # tokenizer only: the same prompt tokens as the hf backend
        self._llm: Any = None
        self._vllm: Any = None

    def model_id(self) -> str:
        return local_model_id(self._renderer.path)

    def render_text(self, req: ChatRequest) -> str:
        return self._renderer.render_text(req)

    def _load(self) -> Any:
        if self._llm is None:
            self._vllm = _import_vllm()
            c = self.config
            self._llm = self._vllm.LLM(
                model=self._renderer.path,
                dtype=c.dtype or "auto",
                trust_remote_code=c.trust_remote_code,
                generation_config="vllm",
                seed=0,
            )
        return self._llm

    def _run(self, requests: list[ChatRequest], on_result: OnResult) -> list[Completion]:
        llm = self._load()
        vllm = self._vllm
        prompts = [{"prompt_token_ids": self._renderer.render_ids(r)} for r in requests]
        params = [sampling_params(vllm, r.sampling, 20 if r.score_tokens else None) for r in requests]
        try:
            outs = llm.generate(prompts, params, use_tqdm=False)
        except (RuntimeError, ValueError) as e:
            log.warning("%s: batch of %d failed: %s", self.config.label(), len(requests), e)
            outs = None
            err = f"generation failed: {type(e).__name__}: {e}"
        results = []
        for j, p in enumerate(prompts):
            if outs is None:
                c = Completion(error=err)
            else:
                o = outs[j].outputs[0]
                probs = None
                if requests[j].score_tokens and getattr(o, "logprobs", None):
                    probs = {str(lp.decoded_token): math.exp(lp.logprob) for lp in o.logprobs[0].values()}
                c = Completion(text=o.text, finish_reason=o.finish_reason, prompt_tokens=len(p["prompt_token_ids"]),
                               completion_tokens=len(o.token_ids), token_probs=probs)
            on_result(j, c)
            results.append(c)
        return results
