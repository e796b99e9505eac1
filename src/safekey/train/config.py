"""The training config (defaults). One pydantic model: YAML file ← CLI flags ← --set overrides."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the files of a training folder (read by the report and the demo)
LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "train_config.yaml"
STATS_FILE = "train_stats.json"


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m"
    trust_remote_code: bool = False  # run a model folder's own code (auto_map); only when the user asks
    mode: Literal["sft", "safekey", "dpo", "grpo"] = "safekey"
    # ablations (safekey mode): drop a component, or run QMM without the query mask
    head: bool = True
    qmm: bool = True
    qmm_unmasked: bool = False
    # what the QMM pass hides: "prefix" = everything before the assistant content (system prompt,
    # chat scaffolding and the user turn); "query" = only the user-message text, template tokens stay visible
    qmm_hide: Literal["prefix", "query"] = "prefix"
    # how hiding is done (all exact): "packed" = the QMM segment rides in the main forward behind a
    # block mask (one pass; eager/sdpa, full attention; what auto picks there); "drop" = a second pass
    # over the visible tokens at their position ids (any backend; auto's fallback); "mask" = a second
    # full pass with a 4D mask (eager/sdpa)
    qmm_attention: Literal["auto", "packed", "mask", "drop"] = "auto"
    # "lean": both cross-entropies from the last hidden state, labelled positions only, in checkpointed
    # chunks through lm_head (never the full B×T×V logits); "full": transformers' loss on full logits
    loss_impl: Literal["lean", "full"] = "lean"
    loss_chunk: int = Field(512, ge=1)  # labelled positions per lm_head chunk (512 × 152K vocab ≈ 311 MB fp32)
    # reference emulation, used by benchmarks/train_overhead.py only: full-length QMM pass and
    # output_hidden_states=True for every layer
    reference_impl: bool = False

    # dpo mode (preference pairs, TRL's DPOTrainer): IPO (arXiv 2509.24393) trains sigmoid DPO plus an
    # SFT term on the chosen trace with weight 0.2, the loss from the divergence point (the shared
    # prefix is context). Not TRL's "ipo" loss, which is Identity-PO.
    dpo_beta: float = Field(0.1, gt=0.0)
    dpo_loss: list[str] = ["sigmoid", "sft"]
    dpo_loss_weights: list[float] = [1.0, 0.2]
    dpo_from: Literal["divergence", "completion"] = "divergence"
    # the reference: None = the LoRA adapter disabled (no second copy) or, for a full fine-tune, a
    # frozen copy of the base; precompute = its log-probs once before training (no copy kept)
    dpo_precompute_ref: bool = False

    # grpo mode (prompts, TRL's GRPOTrainer), TRL's own names; TRL 1.x defaults differ from the
    # papers', so every one is set here: RECAP trains DAPO (loss_type dapo) without a KL term (beta 0)
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(256, ge=1)
    beta: float = Field(0.0, ge=0.0)
    loss_type: str = "dapo"
    # DAPO's clip-higher (RECAP/DAPO: 0.28); None = TRL's symmetric epsilon (0.2). TRL's own name.
    epsilon_high: float | None = Field(None, gt=0.0)
    temperature: float = Field(1.0, gt=0.0)
    grpo_rewards: dict[str, float] = {"safety": 1.0, "over_refusal": 1.0, "format": 0.5}
    grpo_judge: str = "keyword"  # any safekey judge as the safety reward
    grpo_judge_model: str | None = None
    grpo_judge_base_url: str | None = None
    # RECAP: a share of prompts gets its thinking prefilled with N words of counter-aligned reasoning
    # the prompt mix by shares, e.g. {harmful: 0.5, benign: 0.5}: the largest seeded sample with those
    # shares that the file holds (None: every prompt as given)
    prompt_shares: dict[Literal["harmful", "benign", "math"], float] | None = None
    prefill_share: float = Field(0.0, ge=0.0, le=1.0)
    prefill_words: int = Field(500, ge=1)  # RECAP's ℓpre
    prefill_traces: str | None = None  # {id, prefix} or {id, response} rows (e.g. the pairs stage's unsafe traces)
    # benign prompts' prefills: an over-refusing model's traces (RECAP); None: one built-in sentence
    prefill_traces_benign: str | None = None
    # RECAP's math RLVR prompts ({id, question|problem, answer}); reward `math` (math-verify, as the eval grades)
    math_prompts: str | None = None
    # DAPO's dynamic sampling: groups whose rewards all agree (no signal) leave the loss and its token
    # normaliser; their share is logged (dynamic_sampling/dropped_share). DAPO refills the batch, we do not.
    dynamic_sampling: bool = False
    use_vllm: bool = False  # TRL's own vLLM generation (GPU; config only here)
    vllm_mode: Literal["colocate", "server"] = "colocate"

    head_weight: float = 0.2
    qmm_weight: float = 0.2
    theta: float = Field(0.5, ge=0.0, le=1.0)
    epochs: int = Field(5, ge=1)
    last_k_epochs: int = Field(2, ge=0)

    lr: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    max_grad_norm: float = 1.0
    max_length: int = Field(8192, ge=16)
    effective_batch: int = Field(128, ge=1)
    per_device_batch: int = Field(1, ge=1)
    bf16: Literal["auto", True, False] = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # None = the model's default (sdpa)
    # DeepSpeed config (a JSON file or a mapping) for TrainingArguments(deepspeed=…), e.g.
    # configs/deepspeed/zero3.json; on a machine without GPUs it runs on CPU ranks over gloo
    deepspeed: str | dict[str, Any] | None = None
    # FSDP config (a JSON file or a mapping) for TrainingArguments(fsdp=True, fsdp_config=…), e.g.
    # configs/fsdp/fsdp2.json (torch fully_shard); on a machine without GPUs it runs over gloo
    fsdp: str | dict[str, Any] | None = None
    seed: int = 2002

    # rendering: think_flag=0 trains on an empty thinking (distill) or the bare answer (base_flag=1)
    think_flag: int = Field(1, ge=0, le=1)
    base_flag: int = Field(0, ge=0, le=1)
    default_unsafe: int | None = Field(None, ge=0, le=1)  # STAR-1 has no `unsafe`: set 1 explicitly

    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"

    logging_steps: int = 1
    report_to: list[str] = []  # transformers integrations, e.g. [tensorboard] or [wandb] (installed apart)
    save_steps: int | None = None  # None = save once per epoch
    save_total_limit: int | None = 2
    limit: int | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        self._check_numbers()
        if self.mode == "grpo":
            if not self.grpo_rewards:
                raise ValueError("grpo_rewards is empty: name at least one reward (safety, over_refusal, format, math) with a weight")
            if ("math" in self.grpo_rewards or "math" in (self.prompt_shares or {})) and not self.math_prompts:
                raise ValueError("the math reward / prompt share needs math_prompts (a JSONL of {id, question, answer})")
            if self.effective_batch % self.num_generations:
                raise ValueError(f"num_generations={self.num_generations} must divide effective_batch={self.effective_batch}: "
                                 "each optimizer step samples effective_batch completions, num_generations per prompt")
        if self.last_k_epochs > self.epochs:
            # the extra losses cannot start before the first epoch: clamp, and say so where they exist
            # (was an error without a field name or a fix; the demo's 1-epoch runs met it first); the
            # other modes have no DPSH/QMM, so a note about them would only puzzle
            if self.mode == "safekey":
                from ..store import log_warning

                log_warning(f"last_k_epochs={self.last_k_epochs} > epochs={self.epochs}: DPSH/QMM run in all {self.epochs} "
                            f"epoch(s) (last_k_epochs clamped to {self.epochs}; --set last_k_epochs=N to choose)")
            self.last_k_epochs = self.epochs
        if self.mode == "safekey" and self.think_flag == 0:
            raise ValueError("mode=safekey needs the thinking (think_flag=1): U and K live in it")
        if self.deepspeed and self.fsdp:
            raise ValueError("deepspeed and fsdp are two ways to shard the same model: set one of them")
        if self.qmm_unmasked and not self.qmm:
            raise ValueError("qmm_unmasked=true needs qmm=true")
        if len(self.dpo_loss) != len(self.dpo_loss_weights) or not self.dpo_loss:
            raise ValueError(f"dpo_loss {self.dpo_loss} and dpo_loss_weights {self.dpo_loss_weights} must pair up")
        if "ipo" in self.dpo_loss:
            raise ValueError("dpo_loss 'ipo' is TRL's Identity-PO, not Intervened PO; IPO (arXiv 2509.24393) is "
                             "[sigmoid, sft] with weights [1.0, 0.2] from the divergence point (the default)")
        return self

    def _check_numbers(self) -> None:
        """NaN / inf weights and shares were accepted and reached the trainer (a NaN share crashed the
        prompt mix; an inf reward weight trained on nothing); said here, in one line, by name."""
        import math

        for name, vals in (("grpo_rewards", self.grpo_rewards), ("prompt_shares", self.prompt_shares or {}),
                           ("dpo_loss_weights", dict(enumerate(self.dpo_loss_weights)))):
            for k, v in vals.items():
                if not math.isfinite(v):
                    raise ValueError(f"{name}.{k}: {v} is not a finite number")
                if name == "prompt_shares" and v < 0:
                    raise ValueError(f"prompt_shares.{k}: {v} is negative")
        if self.prompt_shares is not None and not any(self.prompt_shares.values()):
            raise ValueError("prompt_shares: every share is 0; give harmful and/or benign a positive share")

    def trainer_fields(self) -> dict[str, Any]:
        """The fields that map one-to-one onto transformers' TrainingArguments, beside the fields they
        map. Why not a TrainingArguments subclass (TRL's style): this config is also read by the
        experiment runner, the plan and the checks without importing transformers, and its names are
        the papers' (effective_batch, last_k_epochs), not the Trainer's; launch-dependent arguments
        (accumulation, precision, sharding) are set in train/run.py."""
        return {
            "num_train_epochs": self.epochs,
            "per_device_train_batch_size": self.per_device_batch,
            "learning_rate": self.lr,
            "adam_beta1": self.adam_beta1,
            "adam_beta2": self.adam_beta2,
            "weight_decay": self.weight_decay,
            "lr_scheduler_type": self.lr_scheduler,
            "warmup_steps": self.warmup_ratio,  # < 1 → a ratio of the total steps (transformers 5)
            "max_grad_norm": self.max_grad_norm,
            "seed": self.seed,
            "logging_steps": self.logging_steps,
            "save_strategy": "steps" if self.save_steps else "epoch",
            "save_steps": self.save_steps or 500,
            "save_total_limit": self.save_total_limit,
        }

    @property
    def lean_loss(self) -> bool:
        """Cross-entropies from the last hidden state in chunks (no full logits); the one place that
        decides it (the trainer, the plan and the model checks read this)."""
        return self.loss_impl == "lean" and not self.reference_impl

    @property
    def use_head(self) -> bool:
        return self.mode == "safekey" and self.head and self.last_k_epochs > 0

    @property
    def use_qmm(self) -> bool:
        return self.mode == "safekey" and self.qmm and self.last_k_epochs > 0

    @property
    def needs_spans(self) -> bool:
        return self.mode == "safekey"
