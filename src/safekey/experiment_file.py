"""The experiment file: its schema (what each key means), its validation and how its paths resolve.

Why apart from the planner: the file is what a user writes and `safekey doctor` checks; the
planner (:mod:`safekey.experiment`) and the stage-config writers (:mod:`safekey.stage_configs`)
both read it, and neither needs the other to do so.

Paths in the file may use ``{starter}`` (the packaged starter data), ``{data}`` (the real datasets,
``SAFEKEY_DATA_DIR``) and ``{here}`` (the experiment file's folder); other relative paths are
relative to the experiment file. Presets (``safekey run --list``) ship in ``resources/experiments``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .paths import resource
from .types import SafekeyError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Launch(_Strict):
    """How each training step starts: in this process's interpreter, or under a multi-process launcher."""

    kind: Literal["python", "torchrun", "accelerate"] = "python"
    nproc: int = Field(1, ge=1)  # processes per node (torchrun --nproc_per_node / accelerate --num_processes)
    accelerate_config: str | None = None  # configs/accelerate/*.yaml for kind=accelerate
    env: dict[str, str] = {}  # e.g. ACCELERATE_USE_CPU: "true" for CPU ranks under torchrun


class TrainSpec(_Strict):
    config: str | None = None  # a train YAML (configs/train/*.yaml); the keys below override it
    epochs: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=16)
    lora: bool = False
    lora_top_layers: int = Field(0, ge=0)  # LoRA only in the top N transformer layers (0 = all)
    limit: int | None = Field(None, ge=1)
    set: dict[str, Any] = {}


class Variant(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    mode: Literal["sft", "safekey", "dpo", "grpo"]  # dpo trains on the pairs of the `pairs:` step, grpo on the prompts
    from_variant: str | None = None  # start from this (earlier) variant's trained model, e.g. SFT → GRPO
    set: dict[str, Any] = {}  # e.g. {head: false} for the −DPSH ablation


class PairsSpec(_Strict):
    """How the dpo variants' preference pairs are made (`safekey data pairs`, the base model as policy)."""

    file: str | None = None  # pairs you bring ({id, question, prefix, chosen, rejected}): no pairs step
    data: str | None = None  # prompts (default: the experiment's train_data)
    judge: str = "keyword"
    judge_model: str | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    limit: int | None = Field(None, ge=1)
    benign: bool = True
    backend: Literal["hf", "vllm"] = "hf"  # how the policy generates
    # any other `data pairs` setting by its PairsConfig name (judge_part, cue, cue_model, samples,
    # temperature, max_interventions, triggers …), checked when the plan is made
    set: dict[str, Any] = {}


class SafetySpec(_Strict):
    backend: Literal["hf", "vllm"] = "hf"  # how the evaluated models generate (vllm: offline engine, GPU)
    # the interpreter that runs these evals: "vllm-env" = $SAFEKEY_VLLM_PYTHON, else ./.venv-vllm/bin/python
    # (vLLM pins its own torch/transformers, so it lives in its own environment; docs/gpu.md)
    python: str | None = None
    benches: list[str] = []
    bench_files: list[str] = []
    limit: str | int | None = None  # N, or BENCH=N,… (BENCH@ATTACK=N: that attack on N of them)
    attacks: list[str] = []  # solvers run on every benchmark (eval safety --attack); [] = none
    attack_settings: dict[str, dict[str, Any]] = {}  # per attack; a "prefixes" path is relative to this file
    attack_benches: dict[str, list[str]] = {}  # per attack: the benchmarks it runs on (default: all)
    samples: int | None = Field(None, ge=1)  # sampled safety (Safe@K); needs temperature > 0
    judge: str = "keyword"
    judge_part: Literal["answer", "thinking", "both", "full"] | None = None  # both: harmful reasoning beside harmful answers
    judge_model: str | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    repetition_penalty: float | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0)
    extra_args: list[str] = []


class ReasoningSpec(_Strict):
    backend: Literal["hf", "vllm"] = "hf"
    python: str | None = None  # as SafetySpec.python
    benches: list[str]
    limit: str | int | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    extra_args: list[str] = []


class Analyses(_Strict):
    aha: bool = False  # safekey analyze aha on every safety eval
    traces: str | None = None  # records with U/K spans for the probe and attention analyses
    probe: bool = False
    attention: bool = False
    kl: bool = False  # per-token KL of each variant from the base on the base's own answers to the first benchmark
    uk_spans: bool = False  # mark U and K in every eval response (the report highlights them)
    limit: int | None = Field(None, ge=1)


class ReportSpec(_Strict):
    title: str | None = None
    baseline: str | None = None  # variant (or "base") every other row gets a paired Δ against


class TrainSource(_Strict):
    """One part of the training data: a file (relative to the experiment file) or a hub dataset id."""

    path: str
    role: Literal["harmful", "benign"]  # sets `unsafe` (1 / 0) where a record has none


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    # what a run costs, measured or estimated (said which): shown by `run --list` and `run --dry-run`
    cost: str = ""
    out: str | None = None  # default runs/NAME
    model: str = "smollm2-135m"
    train_data: str | list[TrainSource]  # one file, or harmful + benign sources mixed first (safekey data mix)
    annotate: Literal["none", "heuristic", "llm"] = "none"  # find U/K in train_data first
    launch: Launch = Launch()
    train: TrainSpec = TrainSpec()
    variants: list[Variant]
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = [2002]  # numpy/torch seeds are 32-bit
    include_base: bool = True
    offline: bool = False  # HF_HUB_OFFLINE=1 for every step
    pairs: PairsSpec = PairsSpec()
    safety: SafetySpec | None = None
    reasoning: ReasoningSpec | None = None
    analyses: Analyses = Analyses()
    report: ReportSpec = ReportSpec()

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError(f"variant names must be unique and not 'base': {names}")
        for i, v in enumerate(self.variants):
            if v.from_variant is not None and v.from_variant not in names[:i]:
                raise ValueError(f"variant {v.name}: from_variant {v.from_variant!r} must name an earlier variant")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"seeds must be a non-empty list without repeats: {self.seeds}")
        if self.launch.kind == "accelerate" and not self.launch.accelerate_config:
            raise ValueError("launch.kind=accelerate needs launch.accelerate_config")
        if (self.analyses.probe or self.analyses.attention) and not self.analyses.traces:
            raise ValueError("analyses.probe / analyses.attention need analyses.traces (records with U/K)")
        if self.analyses.kl and not (self.include_base and self.safety and (self.safety.benches or self.safety.bench_files)):
            raise ValueError("analyses.kl reads the base model's safety eval: it needs include_base and a safety benchmark")
        if self.report.baseline and self.report.baseline not in [*names, "base"]:
            raise ValueError(f"report.baseline {self.report.baseline!r} is not a variant (or base)")
        for key, spec in (("safety", self.safety), ("reasoning", self.reasoning)):
            if spec is not None:
                _check_limit(key, spec)
        return self


def _check_limit(key: str, spec: SafetySpec | ReasoningSpec) -> None:
    """`limit: nosuch=2` silently evaluated everything: a per-benchmark limit must name a benchmark
    of this experiment (registry names or bench-file stems); N must be positive."""
    from .subsample import parse_limit

    if spec.limit is None:
        return
    if isinstance(spec.limit, int):
        if spec.limit < 1:
            raise ValueError(f"{key}.limit must be a positive N, got {spec.limit}")
        return
    from .paths import name_from_stem

    known = [b.lower() for b in spec.benches] + [name_from_stem(Path(f).stem).lower()
                                                 for f in getattr(spec, "bench_files", [])]
    if isinstance(spec, SafetySpec):  # BENCH@ATTACK: an attack's task on part of the benchmark
        on = {a: [b.lower() for b in v] for a, v in spec.attack_benches.items()}
        known += [f"{b}@{a}" for a in spec.attacks if a != "none" for b in list(known) if b in on.get(a, [b])]
    try:
        lim = parse_limit(str(spec.limit), lambda k: k.strip().lower())
    except SafekeyError as e:
        raise ValueError(f"{key}.limit: {e}") from None
    if isinstance(lim, dict):
        unknown = [k for k in lim if k not in known]
        if unknown:
            raise ValueError(f"{key}.limit names {unknown[0]!r}, not a benchmark or task of this experiment ({', '.join(known) or 'none'})")


MAX_YAML_NODES = 100_000  # an experiment file is tens of lines; aliases can expand a few bytes to GBs


def _bounded(data: Any, where: Path) -> Any:
    """Refuse YAML whose alias expansion is huge (a 459-byte file expanded to a 58 MB command line).
    Sizes are memoised per object, so the check itself costs O(distinct nodes)."""
    memo: dict[int, int] = {}

    def size(x: Any) -> int:
        if id(x) in memo:
            return memo[id(x)]
        if isinstance(x, dict):
            n = 1 + sum(size(k) + size(v) for k, v in x.items())
        elif isinstance(x, list):
            n = 1 + sum(size(v) for v in x)
        elif isinstance(x, str):
            n = 1 + len(x) // 64
        else:
            n = 1
        memo[id(x)] = n
        if n > MAX_YAML_NODES:
            raise SafekeyError(f"{where}: expands to more than {MAX_YAML_NODES} values (YAML aliases?); refusing it")
        return n

    size(data)
    return data


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(resource("experiments").glob("*.yaml"))}


def load_experiment(spec: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Experiment, Path]:
    """A file path or a preset name → the validated experiment and the folder its paths are relative to."""
    from .config import _set_path, parse_override

    p = Path(spec)
    if not p.exists():
        known = presets()
        if str(spec) not in known:
            import difflib

            close = difflib.get_close_matches(str(spec), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SafekeyError(f"experiment {spec!r}: no such file or preset{hint} (presets: {', '.join(known)})")
        p = known[str(spec)]
    try:
        data = _bounded(yaml.safe_load(p.read_text(encoding="utf-8")) or {}, p)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise SafekeyError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise SafekeyError(f"{p}: an experiment file is a mapping (name, train_data, variants, …)")
    for o in overrides:
        k, v = parse_override(o)
        _set_path(data, k, v)
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise SafekeyError(f"{p}: {loc + ': ' if loc else ''}{msg}") from None
    return exp, p.resolve().parent


class Paths:
    """Expands the placeholders of an experiment's paths."""

    def __init__(self, here: Path):
        self.here = here

    def __call__(self, text: str) -> str:
        if "{data}" in text:
            from .paths import data_dir

            text = text.replace("{data}", str(data_dir(required=True)))
        text = text.replace("{starter}", str(resource("starter"))).replace("{here}", str(self.here))
        p = Path(text).expanduser()
        return str(p if p.is_absolute() else self.here / p)


def source_path(P: Paths, text: str) -> str:
    """A training source as a path (resolved like every path in the file), or a hub dataset id
    (``org/name`` without a file suffix that is not a local file) as given."""
    import re

    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) and not Path(text).suffix and not (P.here / text).exists():
        return text
    return P(text)
