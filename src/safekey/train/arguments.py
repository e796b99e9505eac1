"""The TrainingArguments of a launch, shared by every training mode (SFT, SafeKey, DPO).

Why one builder: the world size, the accumulation that gives the paper's effective batch, the
sharding config (which must be active before the weights load) and the refusals of launches that
would silently train each rank alone are the same whatever the loss; TRL's configs are
TrainingArguments subclasses, so they come from here with their own fields added.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..types import SafekeyError
from .config import TrainConfig
from .launch import cpu_sharded_state, refuse_sharding_on_cpu

log = logging.getLogger(__name__)


def _fsdp_config(spec: str | dict) -> dict:
    """The `fsdp:` setting as a fresh dict (a JSON file's path or a mapping); a bad file is one line."""
    if isinstance(spec, dict):
        return dict(spec)
    p = Path(spec)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise SafekeyError(f"fsdp: cannot read {p}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise SafekeyError(f"{p}:{e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise SafekeyError(f"{p}: an FSDP config is a JSON object")
    return data


# TrainingArguments that no config changes: the Trainer's own bar and column pruning are off (ours
# log instead; the collator needs the span columns), the optimizer is the papers' AdamW
FIXED_TRAINER_ARGS = {"optim": "adamw_torch", "remove_unused_columns": False, "disable_tqdm": True,
                      "dataloader_num_workers": 0, "ddp_find_unused_parameters": False}


def _report_to(cfg: TrainConfig) -> list[str] | str:
    """The Trainer's integrations, each checked to be installed (a typo or a missing package is one
    line here, not a traceback after the model is loaded)."""
    import importlib.util

    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
             "trackio": ("trackio",), "comet_ml": ("comet_ml",)}
    for name in cfg.report_to:
        if name not in needs:
            raise SafekeyError(f"report_to: {name!r} is not one of {', '.join(needs)}")
        if not any(importlib.util.find_spec(m) for m in needs[name]):
            raise SafekeyError(f"report_to: {name} is not installed (pip install {needs[name][0]})")
    return list(cfg.report_to) or "none"


def _bf16(cfg: TrainConfig) -> bool:
    if cfg.bf16 == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(cfg.bf16)


def training_args(cfg: TrainConfig, out_dir: Path, args_cls: Any = None, extra: dict[str, Any] | None = None):
    """TrainingArguments (or a subclass: TRL's DPOConfig / GRPOConfig, with `extra` fields) for this
    launch, and the gradient accumulation that gives the effective batch."""
    import os

    from transformers import TrainingArguments

    args_cls = args_cls or TrainingArguments
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("MASTER_ADDR") and "WORLD_SIZE" not in os.environ and not any(
            k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
        # `accelerate launch` with a MULTI_CPU config and num_processes > 1 but no mpirun: it sets the
        # rendezvous address and then starts this ONE process, which would train alone, silently
        raise SafekeyError("accelerate launch asked for several CPU processes but started one (MULTI_CPU needs mpirun); "
                           "on one machine use torchrun --standalone --nproc_per_node N -m safekey.cli.main train run …")
    per_step = cfg.per_device_batch * world
    ga = max(1, round(cfg.effective_batch / per_step))
    if ga * per_step != cfg.effective_batch:
        log.warning("effective batch %d is not a multiple of %d; using %d", cfg.effective_batch, per_step, ga * per_step)
    refuse_sharding_on_cpu(cfg)
    sharded_kw: dict[str, Any] = {}
    trainer_checkpointing = cfg.gradient_checkpointing
    if cfg.deepspeed:
        sharded_kw["deepspeed"] = cfg.deepspeed
        if not torch.cuda.is_available():
            sharded_kw["accelerator_config"] = cpu_sharded_state("deepspeed")
    elif cfg.fsdp:
        fsdp_config = _fsdp_config(cfg.fsdp)
        if cfg.gradient_checkpointing:
            # FSDP's own (per shard unit); the Trainer's would all-gather every layer again in backward
            fsdp_config.setdefault("activation_checkpointing", True)
            trainer_checkpointing = False
        sharded_kw.update(fsdp=True, fsdp_config=fsdp_config)
        if not torch.cuda.is_available():
            sharded_kw["accelerator_config"] = cpu_sharded_state("fsdp")
    args = args_cls(
        output_dir=str(out_dir / "checkpoints"),
        gradient_accumulation_steps=ga,
        bf16=_bf16(cfg),
        activation_checkpointing=trainer_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to=_report_to(cfg),
        **cfg.trainer_fields(),
        **FIXED_TRAINER_ARGS,
        **sharded_kw,
        **(extra or {}),
    )
    if world > 1 and args.world_size != world:
        # e.g. an FSDP config launched on CPU: transformers then trains every rank alone, on all the
        # data, and every rank writes the same output files — silently. Refuse instead.
        raise SafekeyError(
            f"launched as {world} processes, but transformers runs this as world size {args.world_size} "
            f"({args.parallel_mode.value}): each rank would train the whole model alone. On CPU launch with torchrun: "
            "torchrun --nproc_per_node N -m safekey.cli.main train run … (--set fsdp=configs/fsdp/fsdp2.json, "
            "--set deepspeed=configs/deepspeed/zero3_cpu.json, or ACCELERATE_USE_CPU=true for plain DDP)"
        )
    return args, ga, world
