"""One experiment as one YAML file: annotate → train (each variant × seed) → evals → analyses → report.

Why: a paper table needs the same data, sampling and judge for every row, and a multi-day GPU run
must resume where it stopped. The experiment file says what to run; :func:`plan_steps` turns it
into the CLI commands a user would type (launching ``torchrun`` / ``accelerate`` for training), and
:class:`~safekey.steps.StepRunner` runs them resumably. No stage is imported here.

Paths in the file may use ``{starter}`` (the packaged starter data), ``{data}`` (the real datasets,
``SAFEKEY_DATA_DIR``) and ``{here}`` (the experiment file's folder); other relative paths are
relative to the experiment file. Presets (``safekey run --list``) ship in ``resources/experiments``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .paths import resource
from .steps import Step, cli, count_lines
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
    epochs: int | None = None
    max_length: int | None = None
    lora: bool = False
    lora_top_layers: int = 0  # LoRA only in the top N transformer layers (0 = all)
    limit: int | None = None
    set: dict[str, Any] = {}


class Variant(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    mode: Literal["sft", "safekey"]
    set: dict[str, Any] = {}  # e.g. {head: false} for the −DPSH ablation


class SafetySpec(_Strict):
    backend: Literal["hf", "vllm"] = "hf"  # how the evaluated models generate (vllm: offline engine, GPU)
    benches: list[str] = []
    bench_files: list[str] = []
    limit: str | int | None = None  # N, or BENCH=N,…
    judge: str = "keyword"
    judge_model: str | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    repetition_penalty: float | None = None
    temperature: float | None = None
    extra_args: list[str] = []


class ReasoningSpec(_Strict):
    backend: Literal["hf", "vllm"] = "hf"
    benches: list[str]
    limit: str | int | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    extra_args: list[str] = []


class Analyses(_Strict):
    aha: bool = False  # safekey analyze aha on every safety eval
    traces: str | None = None  # records with U/K spans for the probe and attention analyses
    probe: bool = False
    attention: bool = False
    limit: int | None = None


class ReportSpec(_Strict):
    title: str | None = None
    baseline: str | None = None  # variant (or "base") every other row gets a paired Δ against


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    out: str | None = None  # default runs/NAME
    model: str = "smollm2-135m"
    train_data: str
    annotate: Literal["none", "heuristic", "llm"] = "none"  # find U/K in train_data first
    launch: Launch = Launch()
    train: TrainSpec = TrainSpec()
    variants: list[Variant]
    seeds: list[int] = [2002]
    include_base: bool = True
    offline: bool = False  # HF_HUB_OFFLINE=1 for every step
    safety: SafetySpec | None = None
    reasoning: ReasoningSpec | None = None
    analyses: Analyses = Analyses()
    report: ReportSpec = ReportSpec()

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError(f"variant names must be unique and not 'base': {names}")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"seeds must be a non-empty list without repeats: {self.seeds}")
        if self.launch.kind == "accelerate" and not self.launch.accelerate_config:
            raise ValueError("launch.kind=accelerate needs launch.accelerate_config")
        if (self.analyses.probe or self.analyses.attention) and not self.analyses.traces:
            raise ValueError("analyses.probe / analyses.attention need analyses.traces (records with U/K)")
        if self.report.baseline and self.report.baseline not in [*names, "base"]:
            raise ValueError(f"report.baseline {self.report.baseline!r} is not a variant (or base)")
        return self


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
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
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
        p = Path(text)
        return str(p if p.is_absolute() else self.here / p)


def run_name(variant: str, seed: int, exp: Experiment) -> str:
    return variant if len(exp.seeds) == 1 else f"{variant}-s{seed}"


def out_dir(exp: Experiment, cwd: Path | None = None) -> Path:
    return Path(exp.out).expanduser() if exp.out else (cwd or Path.cwd()) / "runs" / exp.name


def _train_cmd(exp: Experiment, args: list[str]) -> list[str]:
    """`safekey train run …` under the experiment's launcher."""
    la = exp.launch
    if la.kind == "torchrun":
        # --standalone: a local rendezvous on a free port (two experiments on one host do not collide)
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(la.nproc),
                "-m", "safekey.cli.main", *args]
    if la.kind == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(la.accelerate_config),
                "--num_processes", str(la.nproc), "-m", "safekey.cli.main", *args]
    return cli(*args)


def _sets(d: dict[str, Any]) -> list[str]:
    return [a for k, v in d.items() for a in ("--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]


def _lora_targets(model_dir: str, top: int) -> str | None:
    cfg = Path(model_dir) / "config.json"
    if not top or not cfg.exists():
        return None
    n = json.loads(cfg.read_text()).get("num_hidden_layers")
    if not n:
        return None
    layers = "|".join(str(i) for i in range(max(0, n - top), n))
    return f".*\\.layers\\.({layers})\\.(self_attn|mlp)\\.[a-z_]+_proj"


def plan_steps(exp: Experiment, here: Path, out: Path, base_model: str) -> tuple[list[Step], dict[str, Any]]:
    """The steps of the experiment and the manifest (`experiment.json`) that names every run."""
    P = Paths(here)
    steps: list[Step] = []
    env = {"HF_HUB_OFFLINE": "1"} if exp.offline else {}
    train_env = {**env, **exp.launch.env}
    data = P(exp.train_data)
    if exp.annotate != "none":
        annotated = out / "data" / "train.uk.jsonl"
        steps.append(Step("annotate", cli("annotate", data, "-o", str(annotated), "--labeller", exp.annotate, "--no-progress"),
                          [annotated], 30, env=env))
        data = str(annotated)
    t = exp.train
    common = ["--model", base_model]
    if t.config:
        common += ["--config", P(t.config)]
    if t.epochs:
        common += ["--epochs", str(t.epochs)]
    if t.max_length:
        common += ["--max-length", str(t.max_length)]
    if t.limit:
        common += ["--limit", str(t.limit)]
    if t.lora:
        common += ["--lora"]
        targets = _lora_targets(base_model, t.lora_top_layers)
        if targets:
            common += ["--set", f"lora_target_modules={targets}"]
    common += _sets(t.set)
    n_train = min(t.limit or 10**9, count_lines([Path(P(exp.train_data))]) or 1)
    models: dict[str, str] = {"base": base_model} if exp.include_base else {}
    groups: dict[str, list[str]] = {"base": ["base"]} if exp.include_base else {}
    seeds_of: dict[str, int] = {}
    trains: dict[str, Step] = {}
    for seed in exp.seeds:
        for v in exp.variants:
            name = run_name(v.name, seed, exp)
            folder = out / "train" / name
            args = ["train", "run", data, "--mode", v.mode, "-o", str(folder), *common, *_sets(v.set),
                    "--set", f"seed={seed}"]
            trains[name] = Step(f"train-{name}", _train_cmd(exp, args), [folder / "config.json", folder / "train_log.jsonl"],
                                20 + n_train * (t.epochs or 1) * 1.2, env=train_env)
            models[name] = str(folder)
            groups.setdefault(v.name, []).append(name)
            seeds_of[name] = seed
    safety_args: list[str] | None = None
    if exp.safety:
        s = exp.safety
        safety_args = ["--judge", s.judge, "--no-progress"]
        if s.benches:
            safety_args += ["--bench", ",".join(s.benches)]
        for f in s.bench_files:
            safety_args += ["--bench-file", P(f)]
        for flag, val in (("--limit", s.limit), ("--judge-model", s.judge_model), ("--max-new-tokens", s.max_new_tokens),
                          ("--batch-size", s.batch_size), ("--repetition-penalty", s.repetition_penalty),
                          ("--temperature", s.temperature)):
            if val is not None:
                safety_args += [flag, str(val)]
        safety_args += list(s.extra_args)
    reasoning_args: list[str] | None = None
    if exp.reasoning:
        r = exp.reasoning
        reasoning_args = ["--bench", ",".join(r.benches), "--no-progress"]
        for flag, val in (("--limit", r.limit), ("--max-new-tokens", r.max_new_tokens), ("--batch-size", r.batch_size)):
            if val is not None:
                reasoning_args += [flag, str(val)]
        reasoning_args += list(r.extra_args)
    evals: dict[str, str] = {}
    # each model's evals right after its training: an interrupted experiment has whole rows, seed by seed
    for name, model in models.items():
        if name in trains:
            steps.append(trains[name])
        if safety_args is not None:
            folder = out / "eval" / name
            steps.append(Step(f"eval-{name}", cli("eval", "safety", "--model", f"{exp.safety.backend}:{model}", *safety_args, "--label", name,
                                                  "-o", str(folder)), [folder / "summary.json"], 120, env=env))
            evals[name] = str(folder)
        if reasoning_args is not None:
            folder = out / "reasoning" / name
            steps.append(Step(f"reasoning-{name}", cli("eval", "reasoning", "--model", f"{exp.reasoning.backend}:{model}", *reasoning_args,
                                                       "--label", name, "-o", str(folder)), [folder / "summary.json"], 120,
                              env=env))
    a = exp.analyses
    analysis_files: dict[str, str] = {}
    if a.aha and evals:
        f = out / "analysis" / "aha.json"
        steps.append(Step("analyze-aha", cli("analyze", "aha", *evals.values(), "-o", str(f)), [f], 10 + 2 * len(evals), env=env))
        analysis_files["aha"] = str(f)
    for kind, on in (("probe", a.probe), ("attention", a.attention)):
        if on:
            f = out / "analysis" / f"{kind}.json"
            margs = [x for n, m in models.items() for x in ("--model", f"{n}={m}")]
            lim = ["--limit", str(a.limit)] if a.limit else []
            steps.append(Step(f"analyze-{kind}", cli("analyze", kind, P(str(a.traces)), *margs, *lim, "-o", str(f)), [f],
                              10 + 8 * len(models), env=env))
            analysis_files[kind] = str(f)
    title = exp.report.title or f"safekey experiment {exp.name}"
    base_args = ["--baseline", exp.report.baseline] if exp.report.baseline and len(exp.seeds) == 1 else []
    steps.append(Step("report", cli("report", str(out), "-o", str(out / "report.html"), "--title", title, *base_args),
                      [out / "report.html"], 15, always=True, env=env))
    manifest = {"kind": "experiment", "name": exp.name, "description": exp.description, "model": exp.model,
                "seeds": exp.seeds, "groups": groups, "seed_of": seeds_of, "models": models, "evals": evals,
                "analyses": analysis_files, "baseline": exp.report.baseline,
                "variants": {v.name: {"mode": v.mode, "set": v.set} for v in exp.variants},
                "config": exp.model_dump(mode="json")}
    return steps, manifest


def describe(steps: list[Step]) -> str:
    """The plan as the commands it will run (for --dry-run)."""
    lines = []
    for i, s in enumerate(steps, 1):
        env = " ".join(f"{k}={v}" for k, v in s.env.items())
        lines.append(f"[{i}/{len(steps)}] {s.name}: {env + ' ' if env else ''}{shlex.join(s.cmd)}")
    return "\n".join(lines)
