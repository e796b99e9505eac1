"""How a training run is launched, and what it will do: the sharding requests that this stack
would silently ignore (refused), DeepSpeed on CPU ranks, and the pre-flight plan printed before step 1.

Why its own module: these are the misconfigurations that cost GPU days (a "ZeRO-3" run that is
really DDP, a world size of 1 on 8 ranks), kept apart from the loss code.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..types import SafekeyError
from .config import TrainConfig


def _sharding_asked() -> list[str]:
    import os

    return [name for env, name in (("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP"))
            if os.environ.get(env, "false").lower() == "true"]


def refuse_sharding_on_cpu(cfg: TrainConfig | None = None) -> None:
    """Before TrainingArguments (which, asked for DeepSpeed, first demands the package): on a
    machine without an accelerator, accelerate would ignore the request. (A DeepSpeed config given
    as `deepspeed=` does run on CPU: see :func:`_cpu_deepspeed_state`.)"""
    asked = _sharding_asked()
    if cfg is not None and cfg.deepspeed:
        asked = [a for a in asked if a != "DeepSpeed"]
    if asked and not torch.cuda.is_available():
        raise SafekeyError(
            f"{asked[0]} was requested (the accelerate config), but there is no GPU: accelerate enables {asked[0]} only "
            "on accelerators, so nothing would be sharded. On CPU use plain DDP "
            "(ACCELERATE_USE_CPU=true torchrun --nproc_per_node N -m safekey.cli.main train run …) or DeepSpeed "
            "ZeRO-3 from a config file (torchrun … train run … --set deepspeed=configs/deepspeed/zero3_cpu.json)"
        )


def cpu_deepspeed_state() -> dict[str, Any]:
    """DeepSpeed on CPU ranks. transformers 5.23 builds its distributed state for a `deepspeed=`
    config without passing a backend, and accelerate 1.15 then finds no accelerator backend and
    sets world size 1 on every rank (each trains alone). A PartialState created first with an
    explicit gloo backend and the DeepSpeed flag has the real world size; the TrainingArguments
    reuse it (`use_configured_state`). DeepSpeed's own CPU accelerator does the rest."""
    import os

    from accelerate import PartialState

    # ACCELERATE_USE_CPU would route the Trainer to DDP and silently drop the DeepSpeed config
    os.environ.pop("ACCELERATE_USE_CPU", None)
    if "LOCAL_RANK" not in os.environ:  # a plain `python -m …` start: one rank, as torchrun would set it
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    return {"use_configured_state": True}


def refuse_ignored_sharding(trainer: Any) -> None:
    """A DeepSpeed / FSDP launch that the stack silently runs unsharded (on CPU, accelerate 1.15
    enables DeepSpeed only `if not cpu` and FSDP only for accelerator devices, so the Trainer falls
    back to DDP or to one process): refuse, because "ZeRO-3" that is really plain DDP runs out of
    memory — or worse, trains — on the wrong assumptions."""
    asked = _sharding_asked()
    got = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    if asked and not got:
        raise SafekeyError(
            f"{asked[0]} was requested (the accelerate config), but this launch runs as "
            f"{trainer.args.parallel_mode.value} with world size {trainer.args.world_size}: accelerate enables "
            f"{asked[0]} only on accelerators, so nothing would be sharded. Use a GPU launch, or on CPU plain DDP: "
            "ACCELERATE_USE_CPU=true torchrun --nproc_per_node N -m safekey.cli.main train run …"
        )


def preflight_plan(trainer: Any, feats) -> dict:
    """What this launch will do, before step 1: the misconfigurations that cost GPU days (a world
    size of 1 on 8 GPUs, an accumulation that does not give the paper's batch, extras never on,
    the wrong attention backend) show up here, and again in train_stats.json."""
    a, c = trainer.args, trainer.skcfg
    world = a.world_size
    per_rank_batches = math.ceil(len(feats) / max(1, a.per_device_train_batch_size * world))
    steps_per_epoch = math.ceil(per_rank_batches / a.gradient_accumulation_steps)
    mean_tokens = sum(len(f["input_ids"]) for f in feats) / max(1, len(feats))
    eff = a.per_device_train_batch_size * world * a.gradient_accumulation_steps
    epochs = int(a.num_train_epochs)
    extras = list(range(epochs - c.last_k_epochs + 1, epochs + 1)) if (c.use_head or c.use_qmm) else []
    return {
        "world_size": world, "parallel_mode": a.parallel_mode.value, "per_device_batch": a.per_device_train_batch_size,
        "grad_accum": a.gradient_accumulation_steps, "effective_batch": eff, "steps_per_epoch": steps_per_epoch,
        "epochs": epochs, "epochs_with_extras": extras, "tokens_per_step": round(mean_tokens * eff),
        "sharding": sharding_of(trainer),
        "loss_path": "full-logits" if (c.loss_impl == "full" or c.reference_impl) else f"lean (chunks of {c.loss_chunk})",
        "attention": trainer.attn_backend(),
        "qmm_impl": trainer._qmm_impl() if c.use_qmm else None, "gradient_checkpointing": bool(a.gradient_checkpointing),
        "bf16": bool(a.bf16),
    }


def sharding_of(trainer: Any) -> str:
    if trainer.is_deepspeed_enabled:
        plugin = trainer.accelerator.state.deepspeed_plugin
        stage = (plugin.deepspeed_config.get("zero_optimization") or {}).get("stage") if plugin else None
        return f"deepspeed zero-{stage}" if stage is not None else "deepspeed"
    return "fsdp" if trainer.is_fsdp_enabled else "none"


def format_plan(plan: dict) -> str:
    extras = ",".join(map(str, plan["epochs_with_extras"])) or "none"
    return (f"plan: world size {plan['world_size']} ({plan['parallel_mode']}), per-device batch {plan['per_device_batch']} "
            f"x accumulation {plan['grad_accum']} = effective batch {plan['effective_batch']}; "
            f"{plan['steps_per_epoch']} steps/epoch x {plan['epochs']} epochs (DPSH/QMM in epochs {extras}); "
            f"~{plan['tokens_per_step']} tokens/step; sharding {plan.get('sharding', 'none')}; loss {plan['loss_path']}; "
            f"attention {plan['attention']}, "
            f"QMM {plan['qmm_impl'] or 'off'}; gradient checkpointing {'on' if plan['gradient_checkpointing'] else 'off'}, "
            f"bf16 {'on' if plan['bf16'] else 'off'}")
