"""RL with safety rewards (RECAP, ThinkSafe) on TRL's GRPOTrainer, with counter-aligned prefills.

PROMPTS are the records safekey reads (``id``, ``question``, ``unsafe``; optional ``prefill``): harmful
prompts (unsafe 1), benign look-alikes (unsafe 0), mixed beforehand with ``safekey data mix``. Each
prompt is rendered by the model's chat template (the same renderer as SFT). RECAP's counter-aligned
prefills: for a share ``prefill_share`` of the prompts (chosen by a hash of the id, so the same ones
on every rank and every resume), the thinking is opened with ``prefill_words`` words that accept a
harmful request (or start to over-refuse a benign one), from ``prefill_traces`` or built in. The
prefix is part of the prompt: it gets no gradient (GRPO's loss covers completion tokens only) and
the rewards read only what the model wrote after it (:mod:`.rewards`).

Generation is ``model.generate`` on CPU; on GPUs TRL's own vLLM (``use_vllm``, colocate or server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from ..prefixes import builtin_openings, first_words, in_share, pick, read_prefixes
from ..types import Record, SafekeyError, thinking_open
from .arguments import training_args
from .config import TrainConfig
from .data import checked_rows, prompt_problem
from .render import generation_prompt
from .rewards import make_rewards, safety_reward_kind

OVER_REFUSING = ["This request sounds dangerous, so I should be careful and probably refuse. I cannot help with anything "
                 "that might be misused, even if it looks harmless, so I will decline"]


class EpochRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler whose order in epoch e is a function of (seed, e), not of how many passes
    this process has made: TRL's sampler draws each epoch's permutation from one generator seeded
    once, so a run resumed from a checkpoint in epoch e drew epoch 0's order again (kill -9 +
    ``--resume`` diverged from the uninterrupted run). The Trainer calls ``set_epoch`` through
    accelerate's dataloader before each epoch; epoch 0 is TRL's own first order."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):  # type: ignore[no-untyped-def]
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(int(self.seed) + self.epoch)
        return super().__iter__()


class SafeKeyGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer, as :class:`~.trainer.SafeKeyTrainer` is transformers' Trainer."""

    def __init__(self, *args: Any, skcfg: TrainConfig, **kw: Any):
        super().__init__(*args, **kw)
        self.skcfg = skcfg
        self.exporting = False

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        """TRL's, plus DAPO's dynamic sampling when asked: a group whose rewards all agree carries no
        signal, so its completions leave the loss and the token normaliser (DAPO refills the batch
        with new groups; we do not — the step is smaller, and the dropped share is logged)."""
        out = super()._generate_and_score_completions(inputs)
        if not self.skcfg.dynamic_sampling:
            return out
        keep, share = informative_rows(self.accelerator.gather(out["advantages"]), self.num_generations)
        n = len(out["advantages"])
        local = keep[self.accelerator.process_index * n : (self.accelerator.process_index + 1) * n]
        out["completion_mask"] = out["completion_mask"] * local.unsqueeze(1).to(out["completion_mask"].dtype)
        out["num_items_in_batch"] = self.accelerator.gather(out["completion_mask"].sum()).sum()
        self._metrics["train" if self.model.training else "eval"]["dynamic_sampling/dropped_share"].append(share)
        return out

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        base = super()._get_train_sampler(dataset)
        if type(base) is not RepeatSampler:  # a TRL that changed its sampler: keep it as it is
            return base
        return EpochRepeatSampler(data_source=base.data_source, mini_repeat_count=base.mini_repeat_count,
                                  batch_size=base.batch_size, repeat_count=base.repeat_count, shuffle=base.shuffle,
                                  seed=base.seed)


def informative_rows(advantages: Any, group: int, tol: float = 1e-6) -> tuple[Any, float]:
    """(a bool per completion: its group's rewards differ, the share of groups that do not). A group
    with zero reward variance has every advantage 0 (up to float error), whatever TRL's scaling."""
    flat = (advantages.view(-1, group).abs() < tol).all(dim=1)
    return (~flat).repeat_interleave(group), flat.float().mean().item()


def load_prompts(path: str | Path, limit: int | None = None, *, skip_bad: bool = False, rejects: Path | None = None,
                 default_unsafe: int | None = None) -> list[dict[str, Any]]:
    """Prompt rows; a bad one is one line naming file:line (or a counted reject with `skip_bad`)."""

    def problem(obj: dict[str, Any]) -> str | None:
        if "id" not in obj:
            return "a prompt row needs an id"
        if (bad := prompt_problem(obj)) is not None:
            return bad
        if obj.get("unsafe", default_unsafe) not in (0, 1):
            return "'unsafe' must be 1 (harmful) or 0 (benign); set default_unsafe for files without it"
        if obj.get("prefill") is not None and not isinstance(obj["prefill"], str):
            return "'prefill' must be a string"
        return None

    rows = checked_rows(path, problem, limit=limit, skip_bad=skip_bad, rejects=rejects, what="prompt")
    return [{**r, "unsafe": r.get("unsafe", default_unsafe)} for r in rows]


def load_math_prompts(path: str | Path, known: set[str]) -> list[dict[str, Any]]:
    """RECAP's math RLVR prompts: ``{id, question | problem, answer}`` rows; an id that is also a
    safety prompt's is refused (the rewards read rows by position, the logs by id)."""

    def problem(obj: dict[str, Any]) -> str | None:
        q, a = obj.get("question", obj.get("problem")), obj.get("answer")
        if "id" not in obj:
            return "a math prompt row needs an id"
        if str(obj["id"]) in known:
            return f"id {obj['id']!r} is also a safety prompt's id"
        if not isinstance(q, str) or not q.strip():
            return "a math prompt needs its text as 'question' (or 'problem')"
        if isinstance(a, bool) or not isinstance(a, (str, int, float)) or not str(a).strip():
            return "a math prompt needs 'answer': the gold final answer the reward grades against"
        return None

    rows = checked_rows(path, problem, what="math prompt")
    return [{"id": str(r["id"]), "question": r.get("question", r.get("problem")), "unsafe": 0, "answer": str(r["answer"])}
            for r in rows]


def _pool(r: dict[str, Any]) -> str:
    return "math" if r.get("answer") else "harmful" if r["unsafe"] == 1 else "benign"


def mix_prompts(rows: list[dict[str, Any]], shares: dict[str, float] | None, seed: int) -> list[dict[str, Any]]:
    """The largest seeded sample of `rows` with the given shares of harmful (unsafe 1), benign
    (unsafe 0) and math (with an answer) prompts, in a seeded order (the same on every rank and every
    resume)."""
    import random

    if not shares:
        return rows
    total = sum(shares.values())
    if total <= 0 or any(v < 0 for v in shares.values()):
        raise SafekeyError(f"prompt_shares {shares}: shares must be >= 0 and not all 0")
    pools: dict[str, list[dict[str, Any]]] = {"harmful": [], "benign": [], "math": []}
    for r in rows:
        pools[_pool(r)].append(r)
    want = {k: v / total for k, v in shares.items() if v > 0}
    n = min(int(len(pools[k]) / w) for k, w in want.items())
    if n == 0:
        raise SafekeyError(f"prompt_shares {shares}: the file has no {'/'.join(k for k in want if not pools[k])} prompts")
    rng = random.Random(seed)
    out = [r for k, w in want.items() for r in rng.sample(pools[k], round(n * w))]
    rng.shuffle(out)
    return out


def recap_prefix(row: dict[str, Any], cfg: TrainConfig, traces: dict[str, str], pool: list[str],
                 benign_traces: dict[str, str] | None = None) -> tuple[str, str | None]:
    """(the counter-aligned opening of this prompt's thinking, where it came from): "" and None for
    prompts outside the share and for math prompts (RECAP prefills safety prompts only)."""
    if row.get("prefill"):
        return first_words(str(row["prefill"]), cfg.prefill_words), "row"
    key = str(row["id"])
    if row.get("answer") or not in_share(key, cfg.prefill_share):
        return "", None
    if row["unsafe"] == 1:
        text, src = (traces[key], "traces") if key in traces else (pick(pool, key), "builtin")
    else:
        found = (benign_traces or {}).get(key) or traces.get(key)
        text, src = (found, "traces") if found else (OVER_REFUSING[0], "builtin")
    return first_words(text.replace("{request}", row.get("question") or ""), cfg.prefill_words), src


def grpo_rows(tok: Any, rows: list[dict[str, Any]], cfg: TrainConfig) -> list[dict[str, Any]]:
    """``{prompt (rendered text, + the prefix), question, unsafe, answer, prefill, prefix_source}`` per prompt."""
    traces = read_prefixes(cfg.prefill_traces) if cfg.prefill_traces else {}
    benign = read_prefixes(cfg.prefill_traces_benign) if cfg.prefill_traces_benign else {}
    pool = builtin_openings()
    out = []
    for r in rows:
        base = {"id": str(r["id"]), **({"messages": r["messages"]} if "messages" in r else {"question": r["question"]})}
        # the prompt ends as the generation prompt ends at evaluation (an R1 template's "<think>\n" included)
        prompt = generation_prompt(tok, Record.model_validate(base))
        prefix, source = recap_prefix(r, cfg, traces, pool, benign)
        if prefix:
            prompt += ("" if thinking_open(prompt) else "<think>\n") + prefix + " "
        out.append({"prompt": prompt, "question": r.get("question") or "", "unsafe": int(r["unsafe"]),
                    "answer": str(r.get("answer") or ""), "prefill": prefix, "prefix_source": source})
    return out


def grpo_args(cfg: TrainConfig, weights: list[float]) -> dict[str, Any]:
    """Every GRPOConfig field this mode sets (TRL 1.x defaults are not the papers')."""
    args = {"num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length, "beta": cfg.beta,
            "loss_type": cfg.loss_type, "temperature": cfg.temperature, "reward_weights": weights,
            "use_vllm": cfg.use_vllm, "log_completions": False}
    if cfg.use_vllm:
        args["vllm_mode"] = cfg.vllm_mode
    if cfg.epsilon_high is not None:
        args["epsilon_high"] = cfg.epsilon_high
    return args


def build_grpo_trainer(cfg: TrainConfig, rows: list[dict[str, Any]], out_dir: Path, *, tok: Any = None,
                       extra_callbacks: tuple = ()) -> tuple[Any, Any, dict[str, Any]]:
    from datasets import Dataset
    from transformers import set_seed

    from .config import LOG_FILE
    from .policy import load_policy, load_tokenizer_for
    from .trainer import TrainLogWriter

    tok = tok or load_tokenizer_for(cfg)
    if cfg.math_prompts:
        rows = rows + load_math_prompts(cfg.math_prompts, {str(r["id"]) for r in rows})
    rows = mix_prompts(rows, cfg.prompt_shares, cfg.seed)
    per_step = cfg.effective_batch // cfg.num_generations
    if len(rows) < per_step:  # TRL's sampler drops a short last group: no step at all, and a library traceback
        raise SafekeyError(f"GRPO: {len(rows)} prompt(s), but one optimizer step samples {cfg.num_generations} completions "
                           f"for each of effective_batch / num_generations = {per_step} prompts; use more prompts or "
                           f"--set effective_batch={max(cfg.num_generations, len(rows) * cfg.num_generations)}")
    data = grpo_rows(tok, rows, cfg)
    funcs, weights = make_rewards(cfg.grpo_rewards, cfg.grpo_judge, cfg.grpo_judge_model, cfg.grpo_judge_base_url)
    args, ga, world = training_args(cfg, out_dir, GRPOConfig, grpo_args(cfg, weights))
    set_seed(cfg.seed)
    model, tok, peft_config = load_policy(cfg, tok, generates=True)
    trainer = SafeKeyGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(data),
                                 processing_class=tok, peft_config=peft_config, skcfg=cfg,
                                 callbacks=[TrainLogWriter(Path(out_dir) / LOG_FILE), *extra_callbacks])
    trainer.train_dataset_rows = data
    plan = {"mode": "grpo", "world_size": args.world_size, "parallel_mode": args.parallel_mode.value,
            "per_device_batch": args.per_device_train_batch_size, "grad_accum": ga, "epochs": int(args.num_train_epochs),
            "num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
            "beta": cfg.beta, "loss_type": cfg.loss_type, "epsilon_high": cfg.epsilon_high, "temperature": cfg.temperature,
            "rewards": dict(zip(cfg.grpo_rewards, weights)), "judge": cfg.grpo_judge,
            "prompts": {k: sum(1 for d in data if _pool(d) == k) for k in ("harmful", "benign", "math")},
            "prefilled": sum(1 for d in data if d["prefill"]),
            "prefix_sources": {k: sum(1 for d in data if d["prefix_source"] == k) for k in ("row", "traces", "builtin")},
            "dynamic_sampling": cfg.dynamic_sampling, "safety_reward": safety_reward_kind(funcs), "generation": "vllm" if cfg.use_vllm else "model.generate",
            "first_prompt": data[0]["prompt"] if data else ""}
    stats = {"records": len(rows), "examples": len(data), "dropped": 0, "grad_accum": ga, "world_size": world, "plan": plan}
    return trainer, tok, stats


__all__ = ["EpochRepeatSampler", "SafeKeyGRPOTrainer", "build_grpo_trainer", "grpo_args", "grpo_rows", "informative_rows",
           "load_math_prompts", "load_prompts", "mix_prompts", "recap_prefix"]
