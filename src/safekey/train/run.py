"""A training run: tokenise, build the `SafeKeyTrainer` for the launch it runs under (one process,
DDP, FSDP2, ZeRO-3), train, export. The `safekey train run` entry point.

Why apart from the trainer: the order here matters for memory at scale (the sharding config must be
active before the weights are loaded, so ZeRO-3 partitions them on load), and it is not loss code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..records import jsonl_lines
from ..types import SafekeyError
from .arguments import training_args
from .config import CONFIG_FILE, LOG_FILE, STATS_FILE, TrainConfig
from .export import clear_training_run, export
from .heads import HEADS_ATTR
from .launch import format_plan, preflight_plan, refuse_ignored_sharding
from .trainer import SafeKeyTrainer, TrainLogWriter

log = logging.getLogger(__name__)


def _model_for_training(cfg: TrainConfig, path, trust: bool, model=None):
    """The model (+LoRA, +heads). Called after the TrainingArguments: with a ZeRO-3 config they
    register HF's DeepSpeed config, so from_pretrained loads under `zero.Init` and each rank holds
    only its partition (loaded first, a 7B model sat in host RAM in full fp32 on every rank)."""
    from ..models import load_model
    from .heads import DualPathSafetyHead

    if model is None:
        kw = {"dtype": torch.float32}
        if cfg.attn_implementation:
            kw["attn_implementation"] = cfg.attn_implementation
        model = load_model(path, trust_remote_code=trust, **kw)
    model.config.use_cache = False
    if cfg.lean_loss:
        tc = model.config.get_text_config()
        odd = {k: getattr(tc, k) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
               if getattr(tc, k, None) not in (None, 1, 1.0)}
        if odd:  # lm_head(hidden) is not the logits for such models
            raise SafekeyError(f"{cfg.model}: the lean loss assumes logits = lm_head(last hidden state), but this "
                               f"model post-processes them ({odd}); use --set loss_impl=full")
    hidden = model.config.get_text_config().hidden_size
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    if cfg.use_head:
        # a submodule of the trained model: DDP/FSDP/ZeRO-3 shard and sync it like any other weight,
        # and the Trainer's optimizer sees weights AND biases
        model.add_module(HEADS_ATTR, DualPathSafetyHead(hidden))
    return model


def build_trainer(cfg: TrainConfig, records, out_dir: str | Path, *, tok=None, model=None, extra_callbacks=()):
    """Tokenise, set up the launch, load the model (+LoRA, +heads): (trainer, tokenizer, stats)."""
    from transformers import set_seed

    from ..models import load_tokenizer, resolve_model
    from .data import Collator, encode_all

    out_dir = Path(out_dir)
    path = resolve_model(cfg.model)
    trust = bool(getattr(cfg, "trust_remote_code", False))
    tok = tok or load_tokenizer(path, trust_remote_code=trust)
    feats, dropped = encode_all(tok, records, cfg)
    args, ga, world = training_args(cfg, out_dir)
    set_seed(cfg.seed)
    model = _model_for_training(cfg, path, trust, model)
    # ZeRO-3 partitions on load (each rank holds a slice) — the weights' `ds_id` says it happened
    partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    trainer = SafeKeyTrainer(
        model=model,
        args=args,
        train_dataset=feats,
        data_collator=Collator(pad),
        processing_class=tok,
        skcfg=cfg,
        callbacks=[TrainLogWriter(out_dir / LOG_FILE), *extra_callbacks],
    )
    refuse_ignored_sharding(trainer)
    plan = {**preflight_plan(trainer, feats), "weights_partitioned_at_load": partitioned}
    stats = {"records": len(records), "examples": len(feats), "dropped": dropped, "grad_accum": ga, "world_size": world,
             "plan": plan}
    return trainer, tok, stats


def last_complete_checkpoint(ckpts: Path) -> str | None:
    """The newest checkpoint-N that was finished. The Trainer writes trainer_state.json after the
    weights, optimizer and RNG states, so a folder without it was cut by a kill mid-save (resuming
    from it failed: "Can't find a valid checkpoint"); fall back to the one before."""
    if not ckpts.is_dir():
        return None
    done = [p for p in ckpts.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
    cut = [p.name for p in ckpts.glob("checkpoint-*") if p not in done]
    if cut:
        log.warning("resume: skipping incomplete %s (cut mid-save)", ", ".join(sorted(cut)))
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _decide(cfg: TrainConfig, out_dir: Path, *, resume: bool, overwrite: bool, auto_resume: bool) -> tuple[str, str | None]:
    """What to do with OUT: ("start" | "fresh" | "resume" | "finished", checkpoint). Reads only, so
    every rank of a launch decides the same (rank 0 alone deletes, later)."""
    from ..config import fingerprint

    cfg_path = out_dir / CONFIG_FILE
    if sum((resume, overwrite, auto_resume)) > 1:
        raise SafekeyError("--resume, --auto-resume and --overwrite contradict each other: pick one")
    if (out_dir / "summary.json").exists() or (out_dir / "run.json").exists():
        raise SafekeyError(f"{out_dir} holds an evaluation run; train into another -o")
    if overwrite:
        return "fresh", None
    has_run = (out_dir / LOG_FILE).exists() or (out_dir / "checkpoints").exists() or cfg_path.exists()
    if not (resume or auto_resume):
        if has_run and not (out_dir / STATS_FILE).exists() and last_complete_checkpoint(out_dir / "checkpoints") is None:
            # a run that stopped before its first checkpoint left nothing to keep or continue (#36): a
            # rerun starts it afresh instead of asking for --overwrite
            from ..store import log_warning

            log_warning(f"{out_dir} holds a training run that stopped before its first checkpoint; starting it afresh")
            return "fresh", None
        if has_run:
            raise SafekeyError(f"{out_dir} already holds a training run; use --resume, --auto-resume, --overwrite or another -o")
        return "start", None
    if not cfg_path.exists():
        if resume:
            raise SafekeyError(f"--resume: {out_dir} has no {CONFIG_FILE}; nothing to resume")
        return ("fresh" if has_run else "start"), None
    import yaml

    try:
        old = TrainConfig.model_validate(yaml.safe_load(cfg_path.read_text()))
    except (yaml.YAMLError, ValueError, TypeError, OSError) as e:  # any unreadable config: one line
        raise SafekeyError(f"{cfg_path}: unreadable training config ({type(e).__name__}); use --overwrite") from None
    if fingerprint(old) != fingerprint(cfg):
        raise SafekeyError(f"{out_dir} was trained with another config (see {cfg_path}); use --overwrite or another -o")
    if auto_resume and (out_dir / STATS_FILE).exists():
        return "finished", None
    ckpt = last_complete_checkpoint(out_dir / "checkpoints")
    if ckpt is None:
        if resume:
            raise SafekeyError(f"--resume: no checkpoint under {out_dir / 'checkpoints'}")
        return "fresh", None  # killed before its first checkpoint: nothing to continue from
    return "resume", ckpt


def _lock_out(out_dir: Path):
    """One training per output folder (rank 0 of a launch holds it): two runs into one -o
    interleaved their train_log.jsonl and both "succeeded"."""
    import os

    from filelock import FileLock, Timeout

    if int(os.environ.get("RANK", "0")) != 0:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / ".train.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SafekeyError(f"{out_dir} is being written by another training run") from None
    return lock


def train(cfg: TrainConfig, records_path: str | Path, out_dir: str | Path, *, resume: bool = False,
          overwrite: bool = False, skip_bad: bool = False, auto_resume: bool = False, progress: bool = True) -> dict:
    """Fine-tune and write OUT_DIR: model + tokenizer (plain AutoModelForCausalLM), train_log.jsonl,
    train_config.yaml, train_stats.json, checkpoints/. Returns the stats. `overwrite` starts a
    folder that holds a training run afresh; `auto_resume` continues an interrupted run of the same
    config (or returns the finished run's stats); `skip_bad` puts malformed lines in train.rejects.jsonl."""
    from .launch import die_with_launcher

    die_with_launcher()
    out_dir = Path(out_dir)
    lock = _lock_out(out_dir)
    try:
        return _train_locked(cfg, records_path, out_dir, resume=resume, overwrite=overwrite, skip_bad=skip_bad,
                             auto_resume=auto_resume, progress=progress)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg: TrainConfig, records_path: str | Path, out_dir: Path, *, resume: bool, overwrite: bool,
                  skip_bad: bool, auto_resume: bool, progress: bool) -> dict:
    from ..config import dump_yaml
    from .data import load_records, refuse_one_class_head

    cfg_path = out_dir / CONFIG_FILE
    action, ckpt = _decide(cfg, out_dir, resume=resume, overwrite=overwrite, auto_resume=auto_resume)
    if action == "finished":
        stats = json.loads((out_dir / STATS_FILE).read_text())
        log.warning("%s: already trained with this config (%s); nothing to do", out_dir, STATS_FILE)
        return {**stats, "already_finished": True}
    if action == "fresh":
        clear_training_run(out_dir)
    import os

    rejects = None
    if skip_bad and int(os.environ.get("RANK", "0")) == 0:  # one writer of the rejects file
        out_dir.mkdir(parents=True, exist_ok=True)
        rejects = out_dir / "train.rejects.jsonl"
    from .trainer import TrainProgress

    callbacks = [TrainProgress()] if progress else []
    if cfg.mode == "dpo":  # preference pairs on TRL's DPOTrainer (train/preference.py)
        from .preference import build_dpo_trainer, load_pairs

        pairs = load_pairs(records_path, cfg.limit, skip_bad=skip_bad, rejects=rejects)
        trainer, tok, stats = build_dpo_trainer(cfg, pairs, out_dir, extra_callbacks=tuple(callbacks))
    elif cfg.mode == "grpo":  # prompts and rewards on TRL's GRPOTrainer (train/rl.py)
        from .rl import build_grpo_trainer, load_prompts

        prompts = load_prompts(records_path, cfg.limit, skip_bad=skip_bad, rejects=rejects, default_unsafe=cfg.default_unsafe)
        trainer, tok, stats = build_grpo_trainer(cfg, prompts, out_dir, extra_callbacks=tuple(callbacks))
    else:
        records = load_records(records_path, cfg.limit, skip_bad=skip_bad, rejects=rejects)
        refuse_one_class_head(records, cfg)
        trainer, tok, stats = build_trainer(cfg, records, out_dir, extra_callbacks=callbacks)
    if trainer.args.should_save:
        import sys

        plan = stats["plan"]
        print(format_plan(plan) if plan.get("mode") not in ("dpo", "grpo") else "plan: " + ", ".join(
            f"{k}={v}" for k, v in plan.items() if k != "first_prompt"), file=sys.stderr, flush=True)
        if plan.get("first_prompt"):  # what the policy is sampled from / trained after, as the template renders it
            print(f"first prompt (its last 200 characters): {plan['first_prompt'][-200:]!r}", file=sys.stderr, flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, cfg_path)
        if ckpt is not None:  # the curve after the checkpoint is re-logged: cut what came after it
            print(f"resuming from {ckpt}", file=sys.stderr, flush=True)
            step = int(Path(ckpt).name.split("-")[-1])
            lp = out_dir / LOG_FILE
            if lp.exists():
                rows = [ln for ln in jsonl_lines(lp.read_text()) if ln.strip() and json.loads(ln)["step"] <= step]
                lp.write_text("".join(r if r.endswith("\n") else r + "\n" for r in rows))
    result = trainer.train(resume_from_checkpoint=ckpt)
    export(trainer, tok, out_dir, cfg)
    from ..provenance import provenance

    stats.update({"global_step": trainer.state.global_step, "train_loss": result.training_loss, "provenance": provenance()})
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    if lrs and not any(lrs):  # e.g. one optimizer step, all of it warmup: a "trained" model that is the start model
        note = (f"every optimizer step ({trainer.state.global_step}) ran at learning rate 0 (warmup_ratio "
                f"{cfg.warmup_ratio}): the weights did not change; set warmup_ratio 0 or train on more examples")
        stats["warnings"] = [note]
        if trainer.args.should_save:
            import sys

            print(f"warning: {note}", file=sys.stderr, flush=True)
    if trainer.args.should_save:  # written last, atomically: its presence means "finished"
        from ..store import write_stats

        write_stats(out_dir / STATS_FILE, stats)
    return stats


