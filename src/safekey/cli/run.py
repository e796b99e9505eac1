"""`safekey run EXPERIMENT`: one experiment file (or preset) → every step, resumable."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.argument("experiment", required=False)
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Experiment folder [default: the file's `out`, else runs/NAME].")
@click.option("--set", "overrides", multiple=True, help="key=value override of the experiment file (repeatable), "
              "e.g. --set seeds=[1,2] or --set safety.limit=10.")
@click.option("--dry-run", is_flag=True, help="Print the commands, run nothing.")
@click.option("--list", "list_presets", is_flag=True, help="List the shipped presets and exit.")
def run(experiment, out_dir, overrides, dry_run, list_presets):
    """Run EXPERIMENT (a YAML file or a preset name): annotate → train each variant × seed (under the
    file's launcher: python, torchrun or accelerate) → safety / reasoning evals → analyses → report.

    Each step is a safekey command; a rerun skips finished steps and resumes the interrupted one.
    """
    from ..experiment import describe, load_experiment, plan_steps, presets
    from ..experiment import out_dir as default_out
    from ..steps import StepRunner
    from ..store import write_stats
    from ..types import SafekeyError

    if list_presets:
        import yaml

        for name, p in presets().items():
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            click.echo(f"{name:<16} {doc.get('description', '')}")
            if doc.get("cost"):
                click.echo(f"{'':<16} cost: {doc['cost']}")
        return
    if not experiment:
        raise SafekeyError("give an experiment file or preset name (safekey run --list shows the presets)")
    exp, here = load_experiment(experiment, overrides)
    out = (out_dir or default_out(exp, here)).resolve()
    from ..models import resolve_model

    # also for --dry-run: the LoRA layer targets are read from the resolved model's config
    base = resolve_model(exp.model)
    steps, manifest = plan_steps(exp, here, out, base)
    from ..experiment import check_eval_pythons

    problems = check_eval_pythons(exp, here)
    if dry_run:
        click.echo(describe(steps))
        click.echo(f"cost: {exp.cost or 'not stated for this experiment (time one seed, or the --quick form, first)'}")
        click.echo(resolved_settings_text(steps))
        from .doctor import experiment_findings

        errors = 0
        for f in experiment_findings(experiment):  # the same checks as `safekey doctor EXPERIMENT`
            if f.level != "ok":
                click.echo(f"check: {f.level}: {f.what}: {f.detail}", err=True)
                errors += f.level == "error"
        if not errors:  # the planner's own checks (the eval pythons), where doctor did not already say them
            for p in problems:
                click.echo(f"check: error: {p}", err=True)
                errors += 1
        if errors:
            raise SafekeyError(f"dry run: {errors} check(s) found an error (above); nothing was run")
        return
    if problems:
        raise SafekeyError(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    out.mkdir(parents=True, exist_ok=True)
    write_stats(out / "experiment.json", manifest)
    click.echo(f"safekey run {exp.name} → {out}  ({len(steps)} steps: {len(manifest['models'])} models, "
               f"{len(exp.seeds)} seed(s))")
    StepRunner(out, echo=click.echo, what=f"safekey run {experiment}").run(steps)
    click.echo(f"report: {out / 'report.html'}")


def resolved_settings_text(steps) -> str:
    """Every stage config the run would write (each training's and eval's settings, as the step reads
    them), and each attack's settings with its defaults filled in: what a dry run promises to run."""
    import yaml

    from ..evals.solvers.registry import resolved_settings

    out: list[str] = []
    seen: set[str] = set()
    for s in steps:
        for path, text in s.writes.items():
            if str(path) in seen:
                continue
            seen.add(str(path))
            out.append(f"\n# {path} (written when the run starts)\n{text.rstrip()}")
            cfg = yaml.safe_load(text) or {}
            attacks = [a for a in cfg.get("attacks") or [] if a != "none"] if isinstance(cfg, dict) else []
            if attacks:
                resolved = {a: resolved_settings(a, (cfg.get("attack_settings") or {}).get(a)) for a in attacks}
                out.append("# every attack's settings as they will run (defaults filled in):\n"
                           + yaml.safe_dump({"attack_settings": resolved}, sort_keys=False).rstrip())
    return "\n".join(out)
