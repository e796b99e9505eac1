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
    machine without an accelerator, accelerate would ignore a request that comes from its launcher
    config. (A `deepspeed=` / `fsdp=` training config does run on CPU: see :func:`cpu_sharded_state`.)"""
    asked = _sharding_asked()
    if cfg is not None and cfg.deepspeed:
        asked = [a for a in asked if a != "DeepSpeed"]
    if cfg is not None and cfg.fsdp:
        asked = [a for a in asked if a != "FSDP"]
    if asked and not torch.cuda.is_available():
        raise SafekeyError(
            f"{asked[0]} was requested (the accelerate config), but there is no GPU: accelerate enables {asked[0]} only "
            "on accelerators, so nothing would be sharded. On CPU launch with torchrun and a training config: "
            "torchrun --nproc_per_node N -m safekey.cli.main train run … --set fsdp=configs/fsdp/fsdp2.json "
            "(or deepspeed=configs/deepspeed/zero3_cpu.json, or plain DDP with ACCELERATE_USE_CPU=true)"
        )


def die_with_launcher() -> None:
    """A rank that torchrun (or a launcher built on it: accelerate) started ends when its launcher
    ends. Why: torchrun starts each rank in a session of its own, so a kill -9 of the launcher or of
    its process group left the ranks training to the end, beside a rerun writing the same folder."""
    import os

    from ..stepguard import die_with_parent

    if "TORCHELASTIC_RUN_ID" in os.environ and not die_with_parent():
        raise SafekeyError("this rank's launcher (torchrun) has already ended: not training without it")


def _single_rank_env() -> None:
    """A plain `python -m …` start: one rank, with the variables torchrun would set, so that the
    sharded path (which needs a process group) runs as world size 1 instead of crashing."""
    import os
    import socket

    if "LOCAL_RANK" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def cpu_sharded_state(kind: str) -> dict[str, Any]:
    """DeepSpeed or FSDP on CPU ranks: a gloo PartialState created first, which the
    TrainingArguments reuse (`use_configured_state`).

    DeepSpeed: transformers 5.23 builds its distributed state for a `deepspeed=` config without a
    backend, and accelerate 1.15 then finds no accelerator backend and sets world size 1 on every
    rank (each trains alone); with gloo and the DeepSpeed flag the world size is real, and
    DeepSpeed's own CPU accelerator does the rest. FSDP: the state is plain MULTI_CPU here;
    :func:`enable_fsdp_on_cpu` turns FSDP on once the Trainer has built its plugin."""
    import os

    from accelerate import PartialState

    _single_rank_env()
    if kind == "deepspeed":
        # ACCELERATE_USE_CPU would route the Trainer to DDP and silently drop the DeepSpeed config
        os.environ.pop("ACCELERATE_USE_CPU", None)
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        PartialState(backend="gloo")
    else:
        PartialState(backend="gloo", cpu=True)
    return {"use_configured_state": True}


def enable_fsdp_on_cpu(trainer: Any) -> None:
    """accelerate 1.15 sets DistributedType.FSDP only when the distributed type is an
    accelerator's (MULTI_GPU, …), so on CPU ranks (MULTI_CPU) the Trainer's FSDP plugin is dropped
    and the model would be wrapped in DDP. torch's `fully_shard` itself runs over gloo; the maths
    is the same. So, after the Trainer built its Accelerator, put FSDP and the plugin built from
    the TrainingArguments into accelerate's shared state: `prepare` then shards the model with
    fully_shard, and checkpoints go through accelerate's FSDP save/load, as on GPUs."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin_args = trainer.args.fsdp_plugin_args
    if plugin_args is None or trainer.is_fsdp_enabled or torch.cuda.is_available():
        return
    if plugin_args.get("fsdp_version") != 2:
        raise SafekeyError("on CPU safekey runs FSDP2 only (torch fully_shard): set \"version\": 2 in the fsdp config")
    state = trainer.accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise SafekeyError(f"FSDP on CPU needs a multi-process CPU launch; this one is {state.distributed_type.value}")
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    AcceleratorState._shared_state.update(distributed_type=DistributedType.FSDP, fsdp_plugin=plugin)
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


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
        "loss_path": f"lean (chunks of {c.loss_chunk})" if c.lean_loss else "full-logits",
        "attention": trainer.attn_backend(),
        "qmm_impl": trainer._qmm_impl() if c.use_qmm else None, "gradient_checkpointing": bool(c.gradient_checkpointing),
        "bf16": bool(a.bf16),
    }


def sharding_of(trainer: Any) -> str:
    if trainer.is_deepspeed_enabled:
        plugin = trainer.accelerator.state.deepspeed_plugin
        stage = (plugin.deepspeed_config.get("zero_optimization") or {}).get("stage") if plugin else None
        return f"deepspeed zero-{stage}" if stage is not None else "deepspeed"
    if trainer.is_fsdp_enabled:
        plugin = trainer.accelerator.state.fsdp_plugin
        return f"fsdp{plugin.fsdp_version} ({str(plugin.state_dict_type).split('.')[-1].lower()} checkpoints)"
    return "none"


def format_plan(plan: dict) -> str:
    extras = ",".join(map(str, plan["epochs_with_extras"])) or "none"
    return (f"plan: world size {plan['world_size']} ({plan['parallel_mode']}), per-device batch {plan['per_device_batch']} "
            f"x accumulation {plan['grad_accum']} = effective batch {plan['effective_batch']}; "
            f"{plan['steps_per_epoch']} steps/epoch x {plan['epochs']} epochs (DPSH/QMM in epochs {extras}); "
            f"~{plan['tokens_per_step']} tokens/step; sharding {plan.get('sharding', 'none')}"
            f"{' (weights partitioned at load)' if plan.get('weights_partitioned_at_load') else ''}; loss {plan['loss_path']}; "
            f"attention {plan['attention']}, "
            f"QMM {plan['qmm_impl'] or 'off'}; gradient checkpointing {'on' if plan['gradient_checkpointing'] else 'off'}, "
            f"bf16 {'on' if plan['bf16'] else 'off'}")
