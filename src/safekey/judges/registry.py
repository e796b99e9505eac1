"""The judges by name: one line each (class, default model, help). Adding a judge = one file with its
class + one line here; `--judge`'s help and `safekey doctor` read this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..types import SafekeyError
from .base import Judge
from .ensemble import EnsembleJudge
from .guards import GraniteGuardianJudge, Qwen3GuardJudge, Qwen3GuardStrictJudge, ShieldGemmaJudge, WildGuardJudge
from .keyword import KeywordJudge
from .llm import HarmJudge, JudgeModelConfig, LlamaGuard4Judge, LlamaGuardJudge, RefusalJudge, StrongRejectJudge


@dataclass(frozen=True)
class JudgeSpec:
    cls: type[Judge]
    default_model: str | None  # None: the judge uses no model
    help: str
    max_tokens: int = 512


REGISTRY: dict[str, JudgeSpec] = {
    "keyword": JudgeSpec(KeywordJudge, None, "offline refusal-phrase matcher + off-topic check (a PROXY for harm)"),
    "harm-1to5": JudgeSpec(HarmJudge, "openai:gpt-4o", "SafeKey's 1-5 harm score (5 = harmful)"),
    "refusal-3class": JudgeSpec(RefusalJudge, "openai:gpt-4o", "XSTest's full / partial refusal / compliance"),
    "strongreject": JudgeSpec(StrongRejectJudge, "openai:gpt-4o", "the StrongREJECT rubric (0-1 score)", max_tokens=1024),
    "llama-guard": JudgeSpec(LlamaGuardJudge, "hf:meta-llama/Llama-Guard-3-8B", "Llama Guard 3 (= llama-guard-3)"),
    "llama-guard-3": JudgeSpec(LlamaGuardJudge, "hf:meta-llama/Llama-Guard-3-8B", "Llama Guard 3"),
    "llama-guard-4": JudgeSpec(LlamaGuard4Judge, "hf:meta-llama/Llama-Guard-4-12B", "Llama Guard 4"),
    "qwen3guard": JudgeSpec(Qwen3GuardJudge, "hf:Qwen/Qwen3Guard-Gen-8B", "Qwen3Guard (Controversial = safe)"),
    "qwen3guard-strict": JudgeSpec(Qwen3GuardStrictJudge, "hf:Qwen/Qwen3Guard-Gen-8B", "Qwen3Guard (Controversial = unsafe)"),
    "wildguard": JudgeSpec(WildGuardJudge, "hf:allenai/wildguard", "WildGuard (harmful response, refusal)"),
    "shieldgemma": JudgeSpec(ShieldGemmaJudge, "hf:google/shieldgemma-9b", "ShieldGemma, P(Yes) from logprobs"),
    "granite-guardian": JudgeSpec(GraniteGuardianJudge, "hf:ibm-granite/granite-guardian-3.1-8b",
                                  "Granite Guardian 3.1 (RECAP's reward guard; P(Yes) from logprobs)"),
}


def judge_registry() -> tuple[dict[str, type[Judge]], dict[str, str]]:
    """(every judge class by name, the default model of each LLM judge)."""
    return ({n: s.cls for n, s in REGISTRY.items()},
            {n: s.default_model for n, s in REGISTRY.items() if s.default_model})


def judge_help() -> str:
    """`--judge`'s help, generated from the registry."""
    names = " | ".join(REGISTRY)
    return f"{names}; several joined by commas make an ensemble [default: keyword]."


def make_judge(name: str, *, judge_model: str | None = None, base_url: str | None = None,
               max_tokens: int | None = None, backend: Any = None, ensemble_rule: str = "majority") -> Judge:
    """Build a judge by name; LLM judges default to the reference judge model of the papers.
    ``a,b[,c]`` builds an :class:`EnsembleJudge` (each member with its own default model)."""
    if "," in name:
        if judge_model:
            raise SafekeyError("--judge-model names one model; an ensemble's members use their own defaults")
        return EnsembleJudge([make_judge(n.strip(), base_url=base_url, max_tokens=max_tokens) for n in name.split(",")
                              if n.strip()], ensemble_rule)
    spec = REGISTRY.get(name)
    if spec is None:
        raise SafekeyError(f"unknown judge {name!r}; use one of {', '.join(REGISTRY)}")
    if spec.default_model is None:
        if judge_model:
            raise SafekeyError(f"the {name} judge uses no model; drop --judge-model")
        return spec.cls()
    cfg = JudgeModelConfig(spec=judge_model or spec.default_model, base_url=base_url, max_tokens=max_tokens or spec.max_tokens)
    return spec.cls(cfg, backend=backend)
