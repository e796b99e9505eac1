"""Preference optimisation from the divergence point (Intervened Preference Optimization, IPO,
arXiv 2509.24393) on TRL's DPOTrainer.

A pair is ``{id, question, prefix, chosen, rejected}``: two whole responses that share ``prefix``
(the reasoning up to the first compliance cue) and then diverge — ``rejected`` goes on to comply,
``chosen`` continues from a safety trigger. Both are rendered through the model's chat template by
the same sentinel renderer as SFT (:mod:`.render`, which keeps ``<think>`` whatever the template does
to assistant turns), so the two sequences are token-identical up to the divergence.

``dpo_from: divergence`` moves the prefix into the prompt, so the loss starts at the first token
after it. For sigmoid DPO this changes nothing: the prefix's log-probabilities are the same in
chosen and rejected, for the policy and for the reference, and cancel in the log-ratio difference
(``tests/test_dpo.py`` checks the equality). What it changes is every term that is not a
difference — the SFT term on the chosen trace (IPO's 0.2-weighted NLL), length-normalised losses,
and the chosen/rejected log-prob logs — which then cover the intervened continuation only.
``completion`` trains on the whole responses.

Reference: with LoRA, the adapter disabled (TRL's default: no second copy in memory); for a full
fine-tune, a frozen copy of the base (TRL loads it), or its log-probs precomputed once
(``dpo_precompute_ref``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer

from ..types import Record, SafekeyError
from .arguments import training_args
from .config import TrainConfig
from .data import checked_rows, prompt_problem
from .render import prompt_as_generated, render

PAIR_KEYS = ("id", "prefix", "chosen", "rejected")


class SafeKeyDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, as :class:`~.trainer.SafeKeyTrainer` is transformers' Trainer; it keeps
    the run's config so export, the log writer and the plan read it like every other mode."""

    def __init__(self, *args: Any, skcfg: TrainConfig, **kw: Any):
        super().__init__(*args, **kw)
        self.skcfg = skcfg
        self.exporting = False


def _pair_problem(obj: dict[str, Any]) -> str | None:
    if missing := [k for k in PAIR_KEYS if not isinstance(obj.get(k), str)]:
        return f"missing or non-string {missing[0]!r}"
    if (bad := prompt_problem(obj)) is not None:
        return bad
    if not (obj["chosen"].startswith(obj["prefix"]) and obj["rejected"].startswith(obj["prefix"])):
        return "chosen and rejected must both start with prefix (the shared part up to the divergence)"
    if obj["chosen"] == obj["rejected"]:
        return "chosen and rejected are the same text"
    if len(obj["chosen"]) == len(obj["prefix"]) or len(obj["rejected"]) == len(obj["prefix"]):
        return "chosen and rejected must go on after the prefix"
    return None


def load_pairs(path: str | Path, limit: int | None = None, *, skip_bad: bool = False,
               rejects: Path | None = None) -> list[dict[str, Any]]:
    """Pairs from JSONL; a malformed one is one line naming file:line (or, with `skip_bad`, a
    counted reject in `rejects`). Chosen and rejected must both start with the prefix, and differ.
    Rows ``data pairs`` wrote with another status (already safe, no cue…) are not pairs: skipped."""
    return checked_rows(path, _pair_problem, limit=limit, skip_bad=skip_bad, rejects=rejects, what="preference pair",
                        keep=lambda obj: not isinstance(obj, dict) or obj.get("status") in (None, "pair"))


def preference_rows(tok: Any, pairs: list[dict[str, Any]], cfg: TrainConfig) -> list[dict[str, str]]:
    """TRL's text format ``{prompt, chosen, rejected}``: the prompt rendered once (with the prefix
    when the loss starts at the divergence), each completion ending with the template's turn end."""
    rows = []
    for p in pairs:
        base = {"id": str(p["id"]), **({"messages": p["messages"]} if "messages" in p else {"question": p["question"]})}
        rc = render(tok, Record.model_validate({**base, "response": p["chosen"]}))
        rr = render(tok, Record.model_validate({**base, "response": p["rejected"]}))
        if rc.text[:rc.assistant_start] != rr.text[:rr.assistant_start]:
            raise SafekeyError(f"pair {p['id']}: the chat template renders the prompt differently for chosen and rejected")
        # the policy wrote both sides after its generation prompt (an R1 template's "<think>\n" included)
        prompt, _ = prompt_as_generated(tok, Record.model_validate(base), rc)
        chosen, rejected = rc.text[rc.assistant_start:rc.label_end], rr.text[rr.assistant_start:rr.label_end]
        if cfg.dpo_from == "divergence":
            k = len(p["prefix"])
            prompt, chosen, rejected = prompt + chosen[:k], chosen[k:], rejected[k:]
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def dpo_args(cfg: TrainConfig) -> dict[str, Any]:
    """The DPOConfig fields this mode sets, every one explicit (TRL's defaults are not the paper's)."""
    return {"beta": cfg.dpo_beta, "loss_type": list(cfg.dpo_loss), "loss_weights": list(cfg.dpo_loss_weights),
            "max_length": cfg.max_length, "precompute_ref_log_probs": cfg.dpo_precompute_ref,
            "truncation_mode": "keep_start", "dataset_num_proc": None}


def build_dpo_trainer(cfg: TrainConfig, pairs: list[dict[str, Any]], out_dir: Path, *, tok: Any = None,
                      extra_callbacks: tuple = ()) -> tuple[Any, Any, dict[str, Any]]:
    """(trainer, tokenizer, stats) for a DPO run; the launch (DDP, sharding, accumulation) comes from
    the same TrainingArguments builder as SFT/SafeKey (`training_args(cfg, out_dir, DPOConfig, extra)`)."""
    from datasets import Dataset
    from transformers import set_seed

    from .policy import load_policy, load_tokenizer_for
    from .trainer import TrainLogWriter

    tok = tok or load_tokenizer_for(cfg)
    rows = preference_rows(tok, pairs, cfg)
    args, ga, world = training_args(cfg, out_dir, DPOConfig, dpo_args(cfg))
    set_seed(cfg.seed)
    model, tok, peft_config = load_policy(cfg, tok)
    from .config import LOG_FILE

    trainer = SafeKeyDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                                peft_config=peft_config, skcfg=cfg,
                                callbacks=[TrainLogWriter(Path(out_dir) / LOG_FILE), *extra_callbacks])
    trainer.train_dataset_rows = rows  # the text rows, in dataset order (what was tokenised: for checks and plans)
    reference = ("LoRA adapter disabled (no copy)" if cfg.lora else
                 "precomputed log-probs (no copy kept)" if cfg.dpo_precompute_ref else "frozen copy of the base")
    plan = {"mode": "dpo", "world_size": args.world_size, "parallel_mode": args.parallel_mode.value,
            "per_device_batch": args.per_device_train_batch_size, "grad_accum": ga,
            "effective_batch": args.per_device_train_batch_size * args.world_size * ga, "epochs": int(args.num_train_epochs),
            "loss": dict(zip(cfg.dpo_loss, cfg.dpo_loss_weights)), "beta": cfg.dpo_beta, "loss_from": cfg.dpo_from,
            "reference": reference, "first_prompt": rows[0]["prompt"] if rows else ""}
    stats = {"records": len(pairs), "examples": len(rows), "dropped": 0, "grad_accum": ga, "world_size": world, "plan": plan}
    return trainer, tok, stats


__all__ = ["SafeKeyDPOTrainer", "build_dpo_trainer", "dpo_args", "load_pairs", "preference_rows"]
