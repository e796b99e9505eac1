"""The policy a TRL trainer is handed (DPO, GRPO): weights, a tokenizer with a pad token, and LoRA as
a `peft_config` — TRL wraps the model itself, and then takes the disabled adapter as the reference
(no second copy in memory)."""

from __future__ import annotations

from typing import Any

from .config import TrainConfig


def load_policy(cfg: TrainConfig, tok: Any = None, *, generates: bool = False) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config or None); call after the TrainingArguments (ZeRO-3 loads
    partitioned once its config is registered). `generates`: the trainer samples from the policy
    (GRPO), so its KV cache stays on."""
    import torch

    from ..models import load_model, resolve_model

    path = resolve_model(cfg.model)
    tok = tok or load_tokenizer_for(cfg)
    kw: dict[str, Any] = {"dtype": torch.float32}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    model = load_model(path, trust_remote_code=bool(cfg.trust_remote_code), **kw)
    model.config.use_cache = generates
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    return model, tok, peft_config


def load_tokenizer_for(cfg: TrainConfig) -> Any:
    from ..models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(cfg.model), trust_remote_code=bool(cfg.trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
