"""The trained model as a plain `from_pretrained` folder (LoRA merged, no safety heads), and the
files a training run owns (what `--overwrite` removes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..types import SafekeyError
from .config import CONFIG_FILE, LOG_FILE, STATS_FILE, TrainConfig
from .heads import HEADS_ATTR

TRAIN_OUTPUTS = (LOG_FILE, CONFIG_FILE, STATS_FILE, "checkpoints", "config.json", "model.safetensors",
                 "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "chat_template.jinja", "train.rejects.jsonl")


def clear_training_run(out_dir: Path) -> None:
    """--overwrite: remove a previous training run's files (only those; rank 0 only)."""
    import os
    import shutil

    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name in TRAIN_OUTPUTS:
        p = out_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _export_sharded_lora(trainer: Any, out_dir: Path, cfg: TrainConfig) -> None:
    """LoRA under ZeRO-3 / FSDP: each rank holds a slice of every weight, so merging in place would
    merge slices. Gather the full state dict (every rank takes part), then on the saving rank
    rebuild the PEFT model on CPU from the base weights, load the gathered weights and merge."""
    from peft import get_peft_model

    from ..models import load_model, resolve_model

    full = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if not trainer.args.should_save:
        return
    core = trainer.accelerator.unwrap_model(trainer.model)
    from transformers.integrations import deepspeed as hf_ds

    # a plain CPU load on this rank alone: with the ZeRO-3 config still registered, from_pretrained
    # would partition the weights and wait in collectives for ranks that have already finished
    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds.unset_hf_deepspeed_config()
    try:
        base = load_model(resolve_model(cfg.model), trust_remote_code=bool(cfg.trust_remote_code), dtype=torch.float32)
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved
    peft_model = get_peft_model(base, core.peft_config["default"])
    sd = {k: v for k, v in full.items() if f".{HEADS_ATTR}." not in f".{k}" and not k.startswith(HEADS_ATTR + ".")}
    missing, unexpected = peft_model.load_state_dict(sd, strict=False)
    lost = [k for k in missing if "lora_" in k or not any(k.endswith(u) for u in ("rotary_emb.inv_freq",))]
    if lost or unexpected:
        raise SafekeyError(f"LoRA export: gathered weights do not fit the model (missing {lost[:3]}, unexpected {unexpected[:3]})")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(out_dir))


def _drop_tied(model: Any, state_dict: dict) -> dict:
    """Gathered copies of tied weights no longer share storage, so save_pretrained would write both
    (e.g. lm_head.weight beside embed_tokens.weight): keep only the source, as a plain save does."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return {k: v for k, v in state_dict.items() if not (k in tied and tied[k] in state_dict)}


def export(trainer: Any, tok, out_dir: Path, cfg: TrainConfig) -> None:
    """Model + tokenizer into OUT_DIR, loadable by plain AutoModelForCausalLM (LoRA merged, no heads)."""
    trainer.exporting = True
    try:
        if cfg.lora and (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
            _export_sharded_lora(trainer, out_dir, cfg)
        elif cfg.lora:
            core = trainer.accelerator.unwrap_model(trainer.model)
            merged = core.merge_and_unload()
            if trainer.args.should_save:
                sd = {k: v for k, v in merged.state_dict().items() if not k.startswith(HEADS_ATTR + ".")}
                merged.save_pretrained(str(out_dir), state_dict=sd)
        elif trainer.is_fsdp_enabled:
            # sharded checkpoints make save_model write slices only: gather the full weights (every
            # rank takes part), the saving rank writes them (heads dropped by _save)
            full = trainer.accelerator.get_state_dict(trainer.model)
            if trainer.args.should_save:
                trainer._save(str(out_dir), state_dict=_drop_tied(trainer.accelerator.unwrap_model(trainer.model), full))
        else:
            trainer.save_model(str(out_dir))
    finally:
        trainer.exporting = False
    if trainer.args.should_save:
        tok.save_pretrained(str(out_dir))
        (Path(out_dir) / "training_args.bin").unlink(missing_ok=True)
