"""`safekey doctor [--config SAFETY.yaml] [--check SPEC]…`: what a run will need, checked first."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A safety-eval YAML (as for `eval safety --config`): its model, judge and size are checked.")
@click.option("--check", "specs", multiple=True, help="A kind:model spec to check (repeatable).")
@click.option("--base-url", default=None, help="Endpoint for --check openai:… specs.")
def doctor(config_file, specs, base_url):
    """Keys present, endpoints answering, weights local or cached, GPU / bf16 / flash-attention,
    sandbox, disk, and the size of the run. Exit 2 when anything a run needs is missing."""
    from rich.console import Console
    from rich.table import Table

    from ..preflight import check_backend, cost, environment
    from ..types import SafekeyError

    rows = environment()
    for s in specs:
        rows += check_backend(s, base_url=base_url)
    if config_file is not None:
        from ..config import load_config
        from ..evals.judges import judge_registry
        from ..evals.safety import SafetyEvalConfig
        from ..evals.safety_benchmarks import REGISTRY

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
