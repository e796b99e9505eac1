"""One experiment as one YAML file: annotate → train (each variant × seed) → evals → analyses → report.

Why: a paper table needs the same data, sampling and judge for every row, and a multi-day GPU run
must resume where it stopped. The experiment file says what to run; :func:`plan_steps` turns it
into the CLI commands a user would type (launching ``torchrun`` / ``accelerate`` for training), and
:class:`~safekey.steps.StepRunner` runs them resumably. No stage is imported here.

The file's schema and loading live in :mod:`safekey.experiment_file`; each step's stage config
(the YAML its command reads with ``--config``) is written by :mod:`safekey.stage_configs`.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .experiment_file import (  # re-exported: the planner's callers read the file through it
    Analyses,
    Experiment,
    Launch,
    Paths,
    ReasoningSpec,
    ReportSpec,
    SafetySpec,
    TrainSource,
    TrainSpec,
    Variant,
    load_experiment,
    presets,
    source_path,
)
from .stage_configs import (
    pairs_config_yaml,
    reasoning_config_yaml,
    safety_bench_names,
    safety_config_yaml,
    train_config_yaml,
)
from .steps import Step, cli, count_lines
from .types import SafekeyError

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


def _lora_targets(model_dir: str, top: int) -> str | None:
    cfg = Path(model_dir) / "config.json"
    if not top or not cfg.exists():
        return None
    n = json.loads(cfg.read_text()).get("num_hidden_layers")
    if not n:
        return None
    layers = "|".join(str(i) for i in range(max(0, n - top), n))
    return f".*\\.layers\\.({layers})\\.(self_attn|mlp)\\.[a-z_]+_proj"


def _generated(folder: Path) -> Callable[[], str]:
    """A running eval's progress line: generations written so far."""
    return lambda: f"{count_lines(sorted(folder.glob('*/generations.jsonl')))} generated"


def _trained(folder: Path) -> Callable[[], str]:
    return lambda: f"step {count_lines([folder / 'train_log.jsonl'])}"


def named_files(value: Any, *, skip: frozenset[str] = frozenset()) -> list[Path]:
    """Every existing file or folder a setting names (``prefixes: traces.jsonl``, ``prefill_traces``,
    ``--bench-path NAME=PATH`` in extra args, a DeepSpeed JSON): a step's inputs, so editing one of
    them reruns the step instead of leaving the old numbers in the report."""
    out: list[Path] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in skip:
                out += named_files(v, skip=skip)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out += named_files(v, skip=skip)
    elif isinstance(value, str) and 0 < len(value) < 4096 and "\n" not in value:
        for cand in (value, value.split("=", 1)[1] if "=" in value else ""):
            try:
                # a file, or a folder written as a path ("sft" is a mode, not the folder ./sft)
                if cand and (Path(cand).is_file() or ("/" in cand and Path(cand).is_dir())):
                    out.append(Path(cand))
            except OSError:  # a name too long for the file system is no file
                continue
    return out


def plan_steps(exp: Experiment, here: Path, out: Path, base_model: str) -> tuple[list[Step], dict[str, Any]]:
    """The steps of the experiment and the manifest (`experiment.json`) that names every run."""
    P = Paths(here)
    steps: list[Step] = []
    env = {"HF_HUB_OFFLINE": "1"} if exp.offline else {}
    train_env = {**env, **exp.launch.env}
    data_after: list[str] = []
    if isinstance(exp.train_data, list):
        data = str(out / "data" / "train.mixed.jsonl")
        srcs = [(s.role, source_path(P, s.path)) for s in exp.train_data]
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
    base_inputs = [Path(base_model)] if Path(base_model).is_dir() else []  # a hub id is identified by its name
    # train.config's content is part of each variant's written config: an edit there retrains
    train_inputs = [Path(data), *base_inputs, *([Path(P(t.config))] if t.config else [])]
    targets = _lora_targets(base_model, t.lora_top_layers) if t.lora else None
    n_train = min(t.limit or 10**9, (count_lines([count_path]) if count_path.is_file() else 0) or 1000)
    models: dict[str, str] = {"base": base_model} if exp.include_base else {}
    groups: dict[str, list[str]] = {"base": ["base"]} if exp.include_base else {}
    seeds_of: dict[str, int] = {}
    trains: dict[str, Step] = {}
    pairs_file = Path(P(exp.pairs.file)) if exp.pairs.file else out / "data" / "pairs.jsonl"
    if any(v.mode == "dpo" for v in exp.variants) and not exp.pairs.file:
        # the dpo variants' preference pairs, made on-policy with the base model (safekey data pairs)
        pr = exp.pairs
        prompts = P(pr.data) if pr.data else data
        pcfg = out / "configs" / "pairs.yaml"
        steps.append(Step("pairs", cli("data", "pairs", prompts, "-o", str(pairs_file), "--config", str(pcfg), "--no-progress",
                                       *(["--limit", str(pr.limit)] if pr.limit else [])), [pairs_file], 60,
                          lambda: f"{count_lines([pairs_file])} items", env=env, inputs=[Path(prompts), *base_inputs, pcfg],
                          after=[] if pr.data else data_after, fresh_args=["--overwrite"],
                          writes={pcfg: pairs_config_yaml(pr, f"{pr.backend}:{base_model}")}))
    for seed in exp.seeds:
        for v in exp.variants:
            name = run_name(v.name, seed, exp)
            folder = out / "train" / name
            cfg_file = out / "configs" / f"train-{name}.yaml"
            dpo = v.mode == "dpo"
            start, start_after = base_model, []
            if v.from_variant:  # e.g. SFT → GRPO: this seed's trained model of the earlier variant
                parent = run_name(v.from_variant, seed, exp)
                start, start_after = models[parent], [trains[parent].name]
            args = ["train", "run", str(pairs_file) if dpo else data, "--config", str(cfg_file), "-o", str(folder),
                    "--no-progress"]
            train_text = train_config_yaml(exp, v, seed, start, P, targets)
            # files the settings name (prefill_traces, a DeepSpeed/FSDP JSON) are inputs too; the model is above
            setting_files = named_files(yaml.safe_load(train_text) or {}, skip=frozenset({"model"}))
            # train_stats.json is written last: its presence means the model was exported whole
            trains[name] = Step(f"train-{name}", _train_cmd(exp, args, here), [folder / "train_stats.json", folder / "config.json"],
                                20 + n_train * (t.epochs or 1) * (2.4 if dpo else 1.2), _trained(folder), env=train_env,
                                inputs=[*train_inputs, cfg_file, *setting_files, *([pairs_file] if dpo else []),
                                        *([Path(start)] if v.from_variant else [])],
                                after=[*((["pairs"] if not exp.pairs.file else []) if dpo else data_after), *start_after],
                                resume_args=["--auto-resume"], fresh_args=["--overwrite"],
                                writes={cfg_file: train_text})
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
        settings = yaml.safe_load(safety_writes[safety_cfg_file]) or {}
        bench_inputs = [Path(P(f)) for f in exp.safety.bench_files]
        bench_inputs += named_files([settings.get("attack_settings") or {}, exp.safety.extra_args])
        safety_args = ["--config", str(safety_cfg_file), "--no-progress", *exp.safety.extra_args]
    reasoning_args: list[str] | None = None
    reasoning_files: list[Path] = []
    reasoning_cfg_file = out / "configs" / "reasoning.yaml"
    reasoning_writes: dict[Path, str] = {}
    if exp.reasoning:
        reasoning_writes = {reasoning_cfg_file: reasoning_config_yaml(exp.reasoning)}
        reasoning_args = ["--config", str(reasoning_cfg_file), "--no-progress", *exp.reasoning.extra_args]
        reasoning_files = named_files(exp.reasoning.extra_args)
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
                              _generated(folder), env=env, inputs=[*model_inputs, reasoning_cfg_file, *reasoning_files], after=after,
                              fresh_args=["--overwrite"], writes=reasoning_writes))
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
                "variants": {v.name: {"mode": v.mode, "set": v.set, **({"from": v.from_variant} if v.from_variant else {})}
                             for v in exp.variants},
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
                lines.append(f"      will write {path} before it runs (a dry run writes nothing)")
    return "\n".join(lines)


__all__ = ["Analyses", "Experiment", "Launch", "Paths", "ReasoningSpec", "ReportSpec", "SafetySpec", "TrainSource",
           "TrainSpec", "Variant", "check_eval_pythons", "describe", "eval_python", "load_experiment", "out_dir",
           "plan_steps", "presets", "run_name", "safety_config_yaml"]
