"""Local transformers backend: chat template, left-padded batched generation, explicit sampling.

Rules this module enforces (each one a bug we have seen elsewhere):

* The prompt is the model's own chat template with the generation prompt, tokenised with
  ``add_special_tokens=False`` (templates that need BOS write it themselves); a leading duplicated
  BOS is removed, and BOS is added only for tokenizers that add it but whose template does not.
* A prefill is appended to the rendered text *right after* the generation prompt, verbatim: no
  space, no newline; ``Completion.text`` is only what the model generated after it.
* Every sampling parameter is set on a fresh ``GenerationConfig``. transformers fills any field
  left ``None`` from the checkpoint's ``generation_config.json`` (e.g. Qwen's top_k=20, R1's
  temperature 0.6), so we set them all, including top_k=0 (off) to match OpenAI semantics.
* Batches are left-padded with an attention mask; batched greedy output equals one-by-one output.
* Generation stops at any EOS id (tokenizer + generation_config) and at the stop strings; stop
  strings are cut from the text, as the OpenAI API does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..types import SafekeyError
from .base import BackendConfig, ChatRequest, Completion, Sampling
from .core import BaseBackend, OnResult, local_model_id

log = logging.getLogger("safekey.llm.hf")


def _dtype(name: str | None):
    import torch

    if not name:
        return torch.float32  # CPU default; pass bfloat16 on GPU
    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise SafekeyError(f"unknown dtype {name!r}; use float32, bfloat16, float16 or auto") from None


def _StopStrings(tok: Any, stops: Sequence[str], start: int):
    """A stopping criterion that looks at *generated* text only.

    transformers' own ``stop_strings`` also match across the prompt boundary (a prompt ending in
    "\n" plus one generated "\n" matches "\n\n"), which the OpenAI API never does.
    """
    import torch
    from transformers import StoppingCriteria

    window = max(len(x) for x in stops) + 4  # every token decodes to >= 1 char, mostly

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            tails = input_ids[:, start:][:, -window:].tolist()
            done = [any(x in tok.decode(t, skip_special_tokens=False) for x in stops) for t in tails]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopStrings()


class HFBackend(BaseBackend):
    """``hf:MODEL`` where MODEL is a local folder, an alias (smollm2-135m) or a hub id."""

    kind = "hf"

    def __init__(self, config: BackendConfig, *, model: Any = None, tokenizer: Any = None):
        """Pass an already loaded `model`/`tokenizer` (e.g. right after training) to skip loading;
        the cache is then off, because an in-memory model has no stable identity."""
        super().__init__(config)
        self._model = model
        self._tok = tokenizer
        self._path: str | None = None
        self._adds_bos: bool | None = None
        if model is not None or tokenizer is not None:
            if model is None or tokenizer is None:
                raise SafekeyError("HFBackend: pass both model and tokenizer, or neither")
            self.config = config.model_copy(update={"cache": False})

    # -- loading -----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        if self._path is None:
            from ..models import resolve_model

            self._path = resolve_model(self.config.model)
        return self._path

    def model_id(self) -> str:
        return local_model_id(self.path)

    def _load_tokenizer(self) -> Any:
        if self._tok is None:
            from ..models import load_tokenizer

            self._tok = load_tokenizer(self.path, trust_remote_code=self.config.trust_remote_code)
        if getattr(self._tok, "chat_template", None) is None:
            raise SafekeyError(f"{self.config.label()}: the tokenizer has no chat template; use an instruct/chat model")
        return self._tok

    def _load(self) -> tuple[Any, Any]:
        tok = self._load_tokenizer()
        if self._model is None:
            import torch

            from ..models import load_model

            self._model = load_model(self.path, dtype=_dtype(self.config.dtype), trust_remote_code=self.config.trust_remote_code)
            device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model.to(device)
            self._model.eval()
        return self._model, tok

    @property
    def tokenizer(self) -> Any:
        return self._load_tokenizer()

    # -- rendering ---------------------------------------------------------------------------
    def render_text(self, req: ChatRequest) -> str:
        """The exact prompt string: chat template + generation prompt + prefill (verbatim)."""
        tok = self._load_tokenizer()
        text = tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True, **req.template_kwargs)
        return text + (req.prefill or "")

    def render_ids(self, req: ChatRequest) -> list[int]:
        """Token ids of :meth:`render_text`, with exactly one BOS where the model expects one."""
        tok = self._load_tokenizer()
        text = self.render_text(req)
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        bos = tok.bos_token_id
        if bos is not None:
            if self._adds_bos is None:
                probe = tok("a", add_special_tokens=True)["input_ids"]
                self._adds_bos = len(probe) > 0 and probe[0] == bos
            if self._adds_bos and (not ids or ids[0] != bos):
                ids = [bos] + ids
            while len(ids) > 1 and ids[0] == bos and ids[1] == bos:
                ids.pop(0)
        return ids

    # -- generation --------------------------------------------------------------------------
    def _eos_ids(self) -> list[int]:
        model, tok = self._load()
        eos: list[int] = []
        for v in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            for x in v if isinstance(v, (list, tuple)) else [v]:
                if x is not None and x not in eos:
                    eos.append(int(x))
        if not eos:
            raise SafekeyError(f"{self.config.label()}: neither the tokenizer nor generation_config names an EOS token")
        return eos

    def _generation_config(self, s: Sampling):
        from transformers import GenerationConfig

        _model, tok = self._load()
        eos = self._eos_ids()
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        sample = s.temperature > 0
        # sampling-only knobs are set only when sampling (greedy ignores them, and transformers warns);
        # everything that also acts on greedy decoding is always explicit
        sampling_knobs = (
            dict(temperature=s.temperature, top_p=s.top_p, top_k=0, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
            if sample
            else {}
        )
        return GenerationConfig(
            max_new_tokens=s.max_tokens,
            min_new_tokens=0,
            do_sample=sample,
            repetition_penalty=s.repetition_penalty,
            encoder_repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            num_return_sequences=1,
            eos_token_id=eos,
            pad_token_id=pad,
            bos_token_id=tok.bos_token_id,
            **sampling_knobs,
        )

    def _generate_batch(self, reqs: Sequence[ChatRequest], s: Sampling) -> list[Completion]:
        import torch

        model, tok = self._load()
        prompts = [self.render_ids(r) for r in reqs]
        gc = self._generation_config(s)
        width = max(len(p) for p in prompts)
        pad = gc.pad_token_id
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: the last prompt token is at the same column
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        device = model.device
        if s.seed is not None:
            torch.manual_seed(s.seed)
        criteria = [_StopStrings(tok, s.stop, width)] if s.stop else None
        scored = any(r.score_tokens for r in reqs)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                generation_config=gc,
                stopping_criteria=criteria,
                **({"output_logits": True, "return_dict_in_generate": True} if scored else {}),
            )
        first = None
        if scored:  # the raw first-step logits (before repetition penalty or sampling processors)
            first = torch.softmax(out.logits[0].float(), dim=-1)
            out = out.sequences
        gen = out[:, width:].tolist()
        eos = set(gc.eos_token_id)
        results = []
        for row, (p, g) in enumerate(zip(prompts, gen)):
            n = next((k for k, t in enumerate(g) if t in eos), None)
            finish = "stop" if n is not None else "length"
            toks = g[:n] if n is not None else g
            text = tok.decode(toks, skip_special_tokens=False)
            cut = min((text.find(x) for x in s.stop if x in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            probs = None
            if first is not None and reqs[row].score_tokens:
                ids = [self._first_token(t) for t in reqs[row].score_tokens]
                if any(i is None for i in ids) or len(set(ids)) < len(ids):
                    results.append(Completion(error=f"score tokens {reqs[row].score_tokens} do not start with distinct "
                                                    "tokens of this tokenizer"))
                    continue
                probs = {t: float(first[row, i]) for t, i in zip(reqs[row].score_tokens, ids)}
            results.append(
                Completion(text=text, finish_reason=finish, prompt_tokens=len(p), completion_tokens=len(toks) + (n is not None),
                           token_probs=probs)
            )
        return results

    def _first_token(self, word: str) -> int | None:
        """The first token of `word` (a label is read from its first token: "Unsafe" may be "Uns"+"afe")."""
        ids = self._load_tokenizer()(word, add_special_tokens=False)["input_ids"]
        return ids[0] if ids else None

    def _run(self, requests: list[ChatRequest], on_result: OnResult) -> list[Completion]:
        """Group by sampling params (one GenerationConfig per batch), longest prompts first."""
        self._load()
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[Sampling, list[int]] = {}
        for i, r in enumerate(requests):  # greedy decoding ignores the seed: per-item seeds still batch
            key = r.sampling if r.sampling.temperature > 0 else r.sampling.model_copy(update={"seed": None})
            groups.setdefault(key, []).append(i)
        bs = max(1, self.config.batch_size)
        for s, idx in groups.items():
            lengths = {i: len(self.render_ids(requests[i])) for i in idx}
            idx = sorted(idx, key=lambda i: -lengths[i])
            for b in range(0, len(idx), bs):
                chunk = idx[b : b + bs]
                try:
                    answers = self._generate_batch([requests[i] for i in chunk], s)
                except (RuntimeError, ValueError) as e:  # e.g. OOM on one batch: retry items alone
                    log.warning("%s: batch of %d failed (%s); retrying one by one", self.config.label(), len(chunk), e)
                    answers = []
                    for i in chunk:
                        try:
                            answers.extend(self._generate_batch([requests[i]], s))
                        except (RuntimeError, ValueError) as e1:
                            answers.append(Completion(error=f"generation failed: {type(e1).__name__}: {e1}"))
                for i, c in zip(chunk, answers):
                    results[i] = c
                    on_result(i, c)
        return [c for c in results if c is not None]
