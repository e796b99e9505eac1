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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

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
    epochs: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=16)
    lora: bool = False
    lora_top_layers: int = Field(0, ge=0)  # LoRA only in the top N transformer layers (0 = all)
    limit: int | None = Field(None, ge=1)
    set: dict[str, Any] = {}


class Variant(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    mode: Literal["sft", "safekey"]
    set: dict[str, Any] = {}  # e.g. {head: false} for the −DPSH ablation


class SafetySpec(_Strict):
    backend: Literal["hf", "vllm"] = "hf"  # how the evaluated models generate (vllm: offline engine, GPU)
    # the interpreter that runs these evals: "vllm-env" = $SAFEKEY_VLLM_PYTHON, else ./.venv-vllm/bin/python
    # (vLLM pins its own torch/transformers, so it lives in its own environment; docs/gpu.md)
    python: str | None = None
    benches: list[str] = []
    bench_files: list[str] = []
    limit: str | int | None = None  # N, or BENCH=N,…
    judge: str = "keyword"
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
    try:
        lim = parse_limit(str(spec.limit), lambda k: k.strip().lower())
    except SafekeyError as e:
        raise ValueError(f"{key}.limit: {e}") from None
    if isinstance(lim, dict):
        unknown = [k for k in lim if k not in known]
        if unknown:
            raise ValueError(f"{key}.limit names {unknown[0]!r}, not a benchmark of this experiment ({', '.join(known) or 'none'})")


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


def _source(P: Paths, text: str) -> str:
    """A training source as a path (resolved like every path in the file), or a hub dataset id
    (``org/name`` without a file suffix that is not a local file) as given."""
    import re

    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) and not Path(text).suffix and not (P.here / text).exists():
        return text
    return P(text)


VLLM_ENV = "vllm-env"


def eval_python(spec: str | None, here: Path) -> str:
    """The interpreter of an eval step: this one, the vLLM environment, or a given path."""
    import os

    if not spec:
        return sys.executable
    if spec == VLLM_ENV:
        return os.environ.get("SAFEKEY_VLLM_PYTHON") or str(Path.cwd() / ".venv-vllm" / "bin" / "python")
    return Paths(here)(spec)


def check_eval_pythons(exp: Experiment, here: Path) -> list[str]:
    """Problems with the eval interpreters (missing, or without vllm / safekey): checked by
    --dry-run and before a real run's first step."""
    import subprocess

    problems = []
    for key, spec in (("safety", exp.safety), ("reasoning", exp.reasoning)):
        if spec is None or not spec.python:
            continue
        py = eval_python(spec.python, here)
        mods = "vllm, safekey" if spec.backend == "vllm" else "safekey"
        if not Path(py).exists():
            problems.append(f"{key}.python: {py} does not exist (set SAFEKEY_VLLM_PYTHON or create it: docs/gpu.md)")
            continue
        try:
            r = subprocess.run([py, "-c", f"import {mods}"], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            problems.append(f"{key}.python: {py} does not run ({type(e).__name__})")
            continue
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            problems.append(f"{key}.python: {py} cannot import {mods} ({last[:120]})")
    return problems


def safety_config_yaml(s: SafetySpec, P: Paths) -> str:
    """The safety eval's config file (``eval safety --config``) for an experiment's `safety:` keys."""
    from .subsample import parse_limit

    cfg: dict[str, Any] = {"judge": s.judge}
    if s.benches:
        cfg["benches"] = list(s.benches)
    if s.bench_files:
        cfg["bench_files"] = [P(f) for f in s.bench_files]
    if s.limit is not None:
        cfg["limit"] = parse_limit(str(s.limit), lambda k: k.strip().lower())
    for key in ("judge_model", "max_new_tokens", "batch_size", "repetition_penalty", "temperature"):
        if getattr(s, key) is not None:
            cfg[key] = getattr(s, key)
    return "# written by safekey run from the experiment's safety: section; edit the experiment, not this\n" + \
        yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def run_name(variant: str, seed: int, exp: Experiment) -> str:
    return variant if len(exp.seeds) == 1 else f"{variant}-s{seed}"


def out_dir(exp: Experiment, here: Path | None = None, cwd: Path | None = None) -> Path:
    """The experiment folder: `out` from the file (relative to the file's folder, like every path
    in it), else runs/NAME under the current directory."""
    if exp.out:
        return Path(Paths(here)(exp.out)) if here is not None else Path(exp.out).expanduser()
    return (cwd or Path.cwd()) / "runs" / exp.name


def _check_accelerate_config(path: str, nproc: int) -> None:
    """The launcher's world size must be the experiment's: a config for 8 processes launched as 2
    (or the reverse) trains with another effective batch than the file says."""
    p = Path(path)
    if not p.is_file():
        raise SafekeyError(f"launch.accelerate_config: {p} not found")
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise SafekeyError(f"launch.accelerate_config: {p} is not valid YAML") from None
    n = cfg.get("num_processes") if isinstance(cfg, dict) else None
    if n is not None and int(n) != nproc:
        raise SafekeyError(f"launch.nproc={nproc} but {p} says num_processes: {n}; make them agree")


def _train_cmd(exp: Experiment, args: list[str], here: Path) -> list[str]:
    """`safekey train run …` under the experiment's launcher."""
    la = exp.launch
    if la.kind == "accelerate":
        _check_accelerate_config(Paths(here)(str(la.accelerate_config)), la.nproc)
    if la.kind == "torchrun":
        # --standalone: a local rendezvous on a free port (two experiments on one host do not collide)
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(la.nproc),
                "-m", "safekey.cli.main", *args]
    if la.kind == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", Paths(here)(str(la.accelerate_config)),
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


def safety_bench_names(s: SafetySpec) -> list[str]:
    """The run-folder names of the safety eval's benchmarks, in the eval's order."""
    from .paths import name_from_stem

    return [*s.benches, *(name_from_stem(Path(f).stem) for f in s.bench_files)]


def _generated(folder: Path) -> Callable[[], str]:
    """A running eval's progress line: generations written so far."""
    return lambda: f"{count_lines(sorted(folder.glob('*/generations.jsonl')))} generated"


def _trained(folder: Path) -> Callable[[], str]:
    return lambda: f"step {count_lines([folder / 'train_log.jsonl'])}"


def plan_steps(exp: Experiment, here: Path, out: Path, base_model: str) -> tuple[list[Step], dict[str, Any]]:
    """The steps of the experiment and the manifest (`experiment.json`) that names every run."""
    P = Paths(here)
    steps: list[Step] = []
    env = {"HF_HUB_OFFLINE": "1"} if exp.offline else {}
    train_env = {**env, **exp.launch.env}
    data_after: list[str] = []
    if isinstance(exp.train_data, list):
        data = str(out / "data" / "train.mixed.jsonl")
        srcs = [(s.role, _source(P, s.path)) for s in exp.train_data]
        steps.append(Step("data-mix", cli("data", "mix", *[a for role, src in srcs for a in (f"--{role}", src)], "-o", data),
                          [Path(data)], 10, env=env, inputs=[Path(src) for _, src in srcs if Path(src).exists()]))
        data_after = ["data-mix"]
    else:
        data = P(exp.train_data)
    count_path = Path(data)
    if exp.annotate != "none":
        annotated = out / "data" / "train.uk.jsonl"
        steps.append(Step("annotate", cli("annotate", data, "-o", str(annotated), "--labeller", exp.annotate, "--no-progress"),
                          [annotated], 30, env=env, inputs=[Path(data)], after=data_after, fresh_args=["--overwrite"]))
        data = str(annotated)
        data_after = ["annotate"]
    t = exp.train
    common = ["--model", base_model]
    base_inputs = [Path(base_model)] if Path(base_model).is_dir() else []  # a hub id is identified by its name
    train_inputs = [Path(data), *base_inputs]
    if t.config:
        common += ["--config", P(t.config)]
        train_inputs.append(Path(P(t.config)))
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
    n_train = min(t.limit or 10**9, (count_lines([count_path]) if count_path.is_file() else 0) or 1000)
    models: dict[str, str] = {"base": base_model} if exp.include_base else {}
    groups: dict[str, list[str]] = {"base": ["base"]} if exp.include_base else {}
    seeds_of: dict[str, int] = {}
    trains: dict[str, Step] = {}
    for seed in exp.seeds:
        for v in exp.variants:
            name = run_name(v.name, seed, exp)
            folder = out / "train" / name
            args = ["train", "run", data, "--mode", v.mode, "-o", str(folder), "--no-progress", *common, *_sets(v.set),
                    "--set", f"seed={seed}"]
            # train_stats.json is written last: its presence means the model was exported whole
            trains[name] = Step(f"train-{name}", _train_cmd(exp, args, here), [folder / "train_stats.json", folder / "config.json"],
                                20 + n_train * (t.epochs or 1) * 1.2, _trained(folder), env=train_env, inputs=train_inputs,
                                after=data_after,
                                resume_args=["--auto-resume"], fresh_args=["--overwrite"])
            models[name] = str(folder)
            groups.setdefault(v.name, []).append(name)
            seeds_of[name] = seed
    safety_args: list[str] | None = None
    bench_inputs: list[Path] = []
    safety_cfg_file = out / "configs" / "safety.yaml"
    safety_writes: dict[Path, str] = {}
    if exp.safety:
        # the eval's own config (SafetyEvalConfig keys), written as a file and passed with --config:
        # one shape from the experiment file to the stage, and a changed setting changes the file the
        # eval steps read, so they rerun (no copied flags)
        safety_writes = {safety_cfg_file: safety_config_yaml(exp.safety, P)}
        bench_inputs = [Path(P(f)) for f in exp.safety.bench_files]
        safety_args = ["--config", str(safety_cfg_file), "--no-progress", *exp.safety.extra_args]
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
    eval_steps: list[str] = []
    for name, model in models.items():
        after = [trains[name].name] if name in trains else []
        # the model folder's contents: a retrained model is a new input, so its evals are redone
        model_inputs = [Path(model)] if (name in trains or Path(model).is_dir()) else []
        if name in trains:
            steps.append(trains[name])
        if safety_args is not None:
            folder = out / "eval" / name
            steps.append(Step(f"eval-{name}", [eval_python(exp.safety.python, here), *cli("eval", "safety", "--model",
                                                  f"{exp.safety.backend}:{model}", *safety_args, "--label", name,
                                                  "-o", str(folder))[1:]], [folder / "summary.json"], 120,
                              _generated(folder), env=env,
                              inputs=[*model_inputs, *bench_inputs, safety_cfg_file], after=after,
                              fresh_args=["--overwrite"], writes=safety_writes))
            evals[name] = str(folder)
            eval_steps.append(f"eval-{name}")
        if reasoning_args is not None:
            folder = out / "reasoning" / name
            steps.append(Step(f"reasoning-{name}", [eval_python(exp.reasoning.python, here), *cli(
                                  "eval", "reasoning", "--model", f"{exp.reasoning.backend}:{model}", *reasoning_args,
                                  "--label", name, "-o", str(folder))[1:]], [folder / "summary.json"], 120,
                              _generated(folder), env=env, inputs=model_inputs, after=after, fresh_args=["--overwrite"]))
    a = exp.analyses
    analysis_files: dict[str, str] = {}
    if a.uk_spans and evals and exp.safety:
        judged = [Path(e) / b / "judged.jsonl" for e in evals.values() for b in safety_bench_names(exp.safety)]
        steps.append(Step("annotate-responses", cli("annotate", *map(str, judged), "--beside", "--skip-bad", "--no-progress"),
                          [j.with_name("judged.uk.jsonl") for j in judged], 5 + len(judged), env=env, inputs=judged,
                          after=eval_steps, fresh_args=["--overwrite"]))
    if a.aha and evals:
        f = out / "analysis" / "aha.json"
        steps.append(Step("analyze-aha", cli("analyze", "aha", *evals.values(), "-o", str(f)), [f], 10 + 2 * len(evals), env=env,
                          inputs=[Path(e) for e in evals.values()], after=eval_steps))
        analysis_files["aha"] = str(f)
    for kind, on in (("probe", a.probe), ("attention", a.attention)):
        if on:
            f = out / "analysis" / f"{kind}.json"
            margs = [x for n, m in models.items() for x in ("--model", f"{n}={m}")]
            lim = ["--limit", str(a.limit)] if a.limit else []
            steps.append(Step(f"analyze-{kind}", cli("analyze", kind, P(str(a.traces)), *margs, *lim, "-o", str(f)), [f],
                              10 + 8 * len(models), env=env, inputs=[Path(P(str(a.traces))), *[Path(m) for n, m in models.items()
                                                                                                  if n in trains or Path(m).is_dir()]],
                              after=[st.name for st in trains.values()]))
            analysis_files[kind] = str(f)
    if a.kl and exp.safety:
        f = out / "analysis" / "kl.json"
        first = Path(evals["base"]) / safety_bench_names(exp.safety)[0] / "judged.jsonl"
        others = [x for n, m in models.items() if n != "base" for x in ("--model-b", f"{n}={m}")]
        steps.append(Step("analyze-kl", cli("analyze", "kl", str(first), "--model-a", f"base={models['base']}", *others,
                                            "--field", "response", "--ks", "0,1,2,4,8,16,32", "-o", str(f)), [f],
                          10 + 10 * len(models), env=env, inputs=[first, *[Path(m) for n, m in models.items() if n in trains]],
                          after=["eval-base", *[st.name for st in trains.values()]]))
        analysis_files["kl"] = str(f)
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
    shown: set[Path] = set()
    for i, s in enumerate(steps, 1):
        env = " ".join(f"{k}={v}" for k, v in s.env.items())
        lines.append(f"[{i}/{len(steps)}] {s.name}: {env + ' ' if env else ''}{shlex.join(s.cmd)}")
        for path in s.writes:
            if path not in shown:
                shown.add(path)
                lines.append(f"      writes {path} first")
    return "\n".join(lines)
