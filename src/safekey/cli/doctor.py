"""`safekey doctor [--config SAFETY.yaml] [--check SPEC]…`: what a run will need, checked first."""

from __future__ import annotations

import os
from pathlib import Path

import click

GATED = ("meta-llama/", "google/")  # hub orgs whose models need an accepted licence and HF_TOKEN


def experiment_findings(spec: str) -> list:
    """What an experiment file (or preset) needs: GPUs for its launcher, bf16 / flash-attention when
    it asks for them, the vLLM environment of its evals, HF_TOKEN for gated hub models, the judge's
    key or weights and its endpoint. Shared with `safekey run --dry-run`."""
    from ..experiment import check_eval_pythons, load_experiment
    from ..judges import judge_registry
    from ..preflight import Finding, check_backend

    exp, here = load_experiment(spec)
    out: list = []
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        gpus = 0
    la = exp.launch
    if la.kind != "python":
        if gpus and la.nproc > gpus:
            out.append(Finding("error", "launch", f"{la.kind} with {la.nproc} processes but {gpus} GPU(s) here"))
        elif not gpus:
            out.append(Finding("warn", "launch", f"{la.kind} × {la.nproc} on CPU ranks (gloo): fine for a trial, "
                                                 "the papers' setup needs GPUs"))
        else:
            out.append(Finding("ok", "launch", f"{la.kind} × {la.nproc} on {gpus} GPU(s)"))
    sets = dict(exp.train.set)
    for variant in exp.variants:
        sets.update(variant.set)
    if str(sets.get("attn_implementation", "")).startswith("flash_attention"):
        try:
            import flash_attn  # noqa: F401

            out.append(Finding("ok", "flash-attention", "installed (asked for by the experiment)"))
        except ImportError:
            out.append(Finding("error", "flash-attention", "the experiment sets attn_implementation=flash_attention_2 "
                                                           "but flash-attn is not installed"))
    if sets.get("bf16") is True and not gpus:
        out.append(Finding("error", "bf16", "the experiment sets bf16: true but no GPU is here"))
    for p in check_eval_pythons(exp, here):
        out.append(Finding("error", "vllm env", p))
    hub = [exp.model] + [s.path for s in exp.train_data] if isinstance(exp.train_data, list) else [exp.model]
    judge_specs = []
    if exp.safety is not None:
        defaults = judge_registry()[1]
        for name in exp.safety.judge.split(","):
            m = exp.safety.judge_model or defaults.get(name.strip())
            if m:
                judge_specs.append((name.strip(), m))
                hub.append(m.split(":", 1)[-1])
    for h in hub:
        if any(h.startswith(g) for g in GATED):
            have = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
            out.append(Finding("ok" if have else "error", "hub access", f"{h} is gated: " + (
                "HF_TOKEN set (the licence must be accepted on the hub)" if have else "set HF_TOKEN and accept its licence")))
    for name, m in judge_specs:
        out += check_backend(m, base_url=None, role=f"judge {name}")
    return out + run_needs(exp, here)


ATTACK_MODELS = ("attacker", "evaluator", "refusal_model", "prefix_model")


def _dataset(P, text: str):
    """A training source: a local file, or a hub dataset cached (or reachable online)."""
    from ..experiment_file import source_path
    from ..preflight import Finding

    try:
        src = source_path(P, text)
    except Exception as e:
        return Finding("error", "dataset", f"{text}: {e}")
    if Path(src).exists():
        return Finding("ok", "dataset", f"{Path(src).name}: local")
    if "/" in src and not Path(src).suffix:
        from huggingface_hub.constants import HF_HUB_CACHE

        cached = (Path(HF_HUB_CACHE) / f"datasets--{src.replace('/', '--')}").is_dir()
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true")
        level = "ok" if cached else "error" if offline else "warn"
        return Finding(level, "dataset", f"{src}: " + ("in the hub cache" if cached else
                                                       "not in the hub cache and the hub is offline" if offline else
                                                       "not cached: downloaded when the run starts"))
    return Finding("error", "dataset", f"{src}: not found")


def run_needs(exp, here) -> list:
    """What `safekey doctor EXPERIMENT` promises beyond the environment: the model to be trained, the
    datasets, the attackers' and writers' endpoints, disk for the checkpoints, and the run's size."""
    import shutil

    from ..experiment import out_dir
    from ..experiment_file import Paths
    from ..preflight import Finding, check_backend

    P = Paths(here)
    out = check_backend(f"hf:{exp.model}", role="trained model", probe=False)
    sources = exp.train_data if isinstance(exp.train_data, list) else [exp.train_data]
    out += [_dataset(P, s if isinstance(s, str) else s.path) for s in sources]
    if exp.safety is not None:
        for attack, st in exp.safety.attack_settings.items():
            for key in ATTACK_MODELS:
                if st.get(key):
                    url = st.get(f"{key}_base_url") or st.get("attacker_base_url")
                    out += check_backend(str(st[key]), base_url=url, role=f"{attack} {key}")
    from ..judges import judge_registry

    for v in exp.variants:  # a GRPO variant's reward judge (RECAP: Granite Guardian) must load too
        st = {**exp.train.set, **v.set}
        if v.mode == "grpo" and st.get("grpo_judge", "keyword") != "keyword":
            spec = st.get("grpo_judge_model") or judge_registry()[1].get(str(st["grpo_judge"]))
            if spec:
                out += check_backend(str(spec), base_url=st.get("grpo_judge_base_url"), role=f"{v.name} reward judge")
    seeds = len(exp.seeds or [1])
    trainings = len(exp.variants) * seeds
    evals = trainings + (1 if getattr(exp, "include_base", True) else 0)
    from ..models import estimate_lora_parameters, estimate_parameters

    params = estimate_parameters(exp.model)
    keep = int(exp.train.set.get("save_total_limit", 2) or 2)
    size = f"{trainings} training(s) ({len(exp.variants)} variant(s) × {seeds} seed(s)), {evals} model(s) evaluated"
    lora = exp.train.lora or bool(exp.train.set.get("lora"))
    r = int(exp.train.set.get("lora_r", 16) or 16)
    trainable = estimate_lora_parameters(exp.model, r, exp.train.lora_top_layers) if lora else params
    if params and trainable:
        # a checkpoint: the trained weights (all of them, or LoRA's adapters) + Adam's two moments in
        # fp32; kept: save_total_limit of them + the exported (merged) model
        per_ckpt = trainable * (4 + 8)
        need = trainings * (keep * per_ckpt + params * 4)
        free = shutil.disk_usage(next(p for p in [out_dir(exp, here), *out_dir(exp, here).parents] if p.exists())).free
        how = f"LoRA r={r}, at most {trainable / 1e6:.1f}M trained" if lora else "full fine-tune"
        size += f"; ≈{params / 1e9:.2f}B parameters, checkpoints ≈ {need / 2**30:.1f} GiB ({how}, {keep} kept)"
        out.append(Finding("ok" if free > need else "error", "disk",
                           f"{free / 2**30:.0f} GiB free for ≈ {need / 2**30:.1f} GiB of checkpoints"))
    out.append(Finding("ok", "run size", size + (f"; cost: {exp.cost}" if exp.cost else "")))
    return out


@click.command()
@click.argument("experiment", required=False)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A safety-eval YAML (as for `eval safety --config`): its model, judge and size are checked.")
@click.option("--check", "specs", multiple=True, help="A kind:model spec to check (repeatable).")
@click.option("--base-url", default=None, help="Endpoint for --check openai:… specs.")
def doctor(experiment, config_file, specs, base_url):
    """Keys present, endpoints answering, weights local or cached, GPU / bf16 / flash-attention,
    sandbox, disk, and the size of the run. EXPERIMENT (a `safekey run` file or preset) adds what its
    plan needs: GPUs for the launcher, the vLLM environment, hub access, judge keys and endpoints.
    Exit 2 when anything a run needs is missing."""
    from rich.console import Console
    from rich.table import Table

    from ..preflight import check_backend, cost, environment
    from ..types import SafekeyError

    rows = environment()
    if config_file is not None and experiment is None:
        import yaml

        loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        if isinstance(loaded, dict) and "variants" in loaded:  # an experiment file given as --config
            experiment, config_file = str(config_file), None
    if experiment:
        rows += experiment_findings(experiment)
    for s in specs:
        rows += check_backend(s, base_url=base_url)
    if config_file is not None:
        from ..config import load_config
        from ..evals.safety import SafetyEvalConfig
        from ..evals.safety_benchmarks import REGISTRY
        from ..judges import judge_registry

        cfg = load_config(SafetyEvalConfig, config_file, ())
        rows += check_backend(cfg.model, base_url=cfg.base_url, role="model")
        defaults = judge_registry()[1]
        for name in cfg.judge.split(","):
            spec = cfg.judge_model or defaults.get(name.strip())
            if spec:
                rows += check_backend(spec, base_url=cfg.judge_base_url, role=f"judge {name.strip()}")
        def size(b: str) -> int:
            n = REGISTRY[b].reference_size or 0
            lim = cfg.limit.get(b) if isinstance(cfg.limit, dict) else cfg.limit
            return min(lim, n) if lim else n

        items = sum(size(b) for b in cfg.benches if b in REGISTRY)
        import torch

        rows += cost(items, cfg.max_new_tokens, on_gpu=torch.cuda.is_available())
    style = {"ok": "green", "warn": "yellow", "error": "bold red"}
    t = Table(title="safekey doctor")
    for c in ("", "check", "finding"):
        t.add_column(c)
    for f in rows:
        t.add_row(f"[{style[f.level]}]{f.level}[/]", f.what, f.detail)
    Console(width=160).print(t)
    errors = [f for f in rows if f.level == "error"]
    if errors:
        raise SafekeyError(f"{len(errors)} check(s) failed; first: {errors[0].what}: {errors[0].detail}")
