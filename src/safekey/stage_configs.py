"""Each step's stage config, written from the experiment file as the YAML its command reads.

Why files instead of flags: one shape from the experiment to the stage — the keys a step runs with
are the stage's own config keys (``SafetyEvalConfig``, ``ReasoningConfig``, ``TrainConfig``), in a
file a user can open and rerun by hand, and a changed setting changes the file's content, which
the step's fingerprint covers, so the step reruns (no flag lists copied field by field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .experiment_file import Experiment, PairsSpec, Paths, ReasoningSpec, SafetySpec, Variant
from .types import SafekeyError

PATH_SETTINGS = {"prefixes"}  # attack settings that name files (resolved like every path in the experiment)
HEADER = "# written by safekey run from the experiment file ({section}); edit the experiment, not this\n"


def _refuse_secrets(obj: Any, where: str) -> None:
    """A config file under OUT/configs is a plain file anyone with the run folder reads: a setting
    that carries a credential (``http://user:KEY@host``, ``?api_key=``, a secret env value) is refused
    at planning; keys come from the environment (the spec's ``api_key_env``, OPENAI_API_KEY)."""
    from .redact import redact_secrets

    if isinstance(obj, dict):
        for k, v in obj.items():
            _refuse_secrets(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _refuse_secrets(v, f"{where}[{i}]")
    elif isinstance(obj, str) and redact_secrets(obj) != obj:
        raise SafekeyError(f"{where}: {redact_secrets(obj)!r} carries a credential, which would be written to the run's "
                           "configs/ file; give the key through the environment (OPENAI_API_KEY or the spec's api_key_env)")


def _dump(section: str, cfg: dict[str, Any]) -> str:
    _refuse_secrets(cfg, section.split(" ")[0].rstrip(":"))  # every config written under OUT/configs
    return HEADER.format(section=section) + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def safety_bench_names(s: SafetySpec) -> list[str]:
    """The run-folder names of the safety eval's benchmarks, in the eval's order."""
    from .paths import name_from_stem

    return [*s.benches, *(name_from_stem(Path(f).stem) for f in s.bench_files)]


def safety_config_yaml(s: SafetySpec, P: Paths) -> str:
    """``eval safety --config``: the experiment's `safety:` keys as SafetyEvalConfig keys."""
    from .subsample import parse_limit

    cfg: dict[str, Any] = {"judge": s.judge}
    if s.benches:
        cfg["benches"] = list(s.benches)
    if s.bench_files:
        cfg["bench_files"] = [P(f) for f in s.bench_files]
    if s.limit is not None:
        cfg["limit"] = parse_limit(str(s.limit), lambda k: k.strip().lower())
    if s.attacks:
        cfg["attacks"] = list(s.attacks)
    if s.attack_settings:
        cfg["attack_settings"] = {a: {k: P(v) if k in PATH_SETTINGS and isinstance(v, str) else v for k, v in kv.items()}
                                  for a, kv in s.attack_settings.items()}
    if s.attack_benches:
        cfg["attack_benches"] = {a: list(v) for a, v in s.attack_benches.items()}
    for key in ("judge_model", "judge_part", "max_new_tokens", "batch_size", "repetition_penalty", "temperature", "samples"):
        if getattr(s, key) is not None:
            cfg[key] = getattr(s, key)
    _refuse_secrets(cfg, "safety")  # before validation: its error would quote the value
    from .evals.safety import SafetyEvalConfig

    try:  # a typo (an unknown attack, a bad setting) fails at planning, in one line
        SafetyEvalConfig.model_validate({**cfg, "model": "planned"})
    except ValueError as e:
        lines = str(e).splitlines()
        raise SafekeyError(f"safety: {' '.join(x.strip() for x in lines[1:3]) if len(lines) > 2 else e}") from None
    return _dump("safety:", cfg)


def reasoning_config_yaml(r: ReasoningSpec) -> str:
    """``eval reasoning --config``: the experiment's `reasoning:` keys as ReasoningConfig keys, with
    the benchmarks' canonical names (``MATH500`` and ``math500`` are one benchmark)."""
    from .evals.reasoning_benchmarks import get_benchmark
    from .subsample import parse_limit

    cfg: dict[str, Any] = {"benchmarks": [get_benchmark(b).name for b in r.benches]}
    if r.limit is not None:
        cfg["limit"] = parse_limit(str(r.limit), lambda k: get_benchmark(k).name)
    if r.max_new_tokens is not None:
        cfg["sampling"] = {"max_tokens": r.max_new_tokens}
    if r.batch_size is not None:
        cfg["batch_size"] = r.batch_size
    return _dump("reasoning:", cfg)


def pairs_config_yaml(p: PairsSpec, policy: str) -> str:
    """``data pairs --config``: the experiment's `pairs:` keys as PairsConfig keys, the base model as policy."""
    from .datamaking.pairs import PairsConfig

    cfg: dict[str, Any] = {"policy": policy, "judge": p.judge, "benign": p.benign}
    if p.judge_model:
        cfg["judge_model"] = p.judge_model
    if p.max_new_tokens is not None:
        cfg["max_new_tokens"] = p.max_new_tokens
    cfg.update(p.set)
    PairsConfig.model_validate(cfg)
    return _dump("pairs:", cfg)


def train_config_yaml(exp: Experiment, v: Variant, seed: int, base_model: str, P: Paths,
                      lora_targets: str | None) -> str:
    """``train run --config``: the train config file named in `train.config` (if any), then the
    experiment's train keys, the variant's keys and the seed — the order the CLI applies them in.
    Validated here, so a typo in `set:` fails at planning in one line, not hours into a run."""
    from .config import _set_path
    from .train.config import TrainConfig

    t = exp.train
    data: dict[str, Any] = {}
    if t.config:
        p = Path(P(t.config))
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SafekeyError(f"train.config: {p}: {type(e).__name__}") from None
        if not isinstance(loaded, dict):
            raise SafekeyError(f"train.config: {p}: a config file must be a mapping")
        data.update(loaded)
    data.update(model=base_model, mode=v.mode)
    for key in ("epochs", "max_length", "limit"):
        if getattr(t, key) is not None:
            data[key] = getattr(t, key)
    if t.lora:
        data["lora"] = True
        if lora_targets:
            data["lora_target_modules"] = lora_targets
    for k, val in {**t.set, **v.set, "seed": seed}.items():
        _set_path(data, k, val)
    try:
        TrainConfig.model_validate(data)
    except ValueError as e:
        first = str(e).splitlines()
        raise SafekeyError(f"variant {v.name}: train settings: {' '.join(first[1:3]) if len(first) > 2 else e}") from None
    return _dump(f"train: and variant {v.name}", data)


__all__ = ["pairs_config_yaml", "reasoning_config_yaml", "safety_bench_names", "safety_config_yaml", "train_config_yaml"]
