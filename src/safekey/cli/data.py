"""`safekey data …`: the STAR-1 data-making steps, one command each, plus `pipeline`.

Every command reads the same config file (configs/data/*.yaml, one section per step) and takes
``--set section.key=value`` overrides; ``--model`` replaces the model of the step it runs.
"""

from __future__ import annotations

import json

import click

from ..paths import refuse_output_in_inputs

config_opt = click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Data config YAML (configs/data/*.yaml).")
set_opt = click.option("--set", "sets", multiple=True, help="Override, e.g. --set reason.teacher.max_tokens=512 (repeatable).")
out_opt = click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output JSONL.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Start the output afresh instead of resuming.")
skip_bad_opt = click.option("--skip-bad", is_flag=True, help="Skip malformed input lines (written to OUT.rejects.jsonl).")
model_opt = click.option("--model", help="kind:model for this step, e.g. openai:gpt-4o or hf:smollm2-135m.")
base_url_opt = click.option("--base-url", help="OpenAI-compatible endpoint for --model openai:….")
limit_opt = click.option("--limit", type=click.IntRange(1), help="Only the first N input records.")
mnt_opt = click.option("--max-new-tokens", type=click.IntRange(1), help="Max tokens per model reply for this step.")


def _cfg(config_file, sets, model_keys=(), model=None, base_url=None, max_new_tokens=None):
    from ..config import load_config
    from ..datamaking.pipeline import DataConfig

    extra = []
    for k in model_keys:
        if model:
            extra.append(f"{k}.model={model}")
        if base_url:
            extra.append(f"{k}.base_url={base_url}")
        if max_new_tokens:
            extra.append(f"{k}.max_tokens={max_new_tokens}")
    return load_config(DataConfig, config_file, [*extra, *sets])


def _report(st: dict) -> None:
    keys = ("inputs", "done", "failed", "failure_reasons", "resumed")
    click.echo(json.dumps({k: st[k] for k in keys if k in st}))


@click.group()
def data() -> None:
    """STAR-1 data making: collect → dedup → classify → reason → score → select → benign."""


@data.command("sources")
def sources_cmd() -> None:
    """List the 18 training sources and the test sets with their canonical hub ids / URLs."""
    from ..datamaking.sources import source_table

    for r in source_table():
        click.echo(f"{r['kind']:5s} {r['name']:22s} {r['location']} {r['config']} {r['splits']}  {r['note']}".rstrip())


recompute_opt = click.option("--overwrite", is_flag=True,
                             help="Recompute even when OUT is complete for this config and these inputs.")


def _skip_complete(out, stage: str, section, older=()) -> bool:
    """A whole-file step whose output is final (same config, inputs older than it) is not redone."""
    from pathlib import Path

    from ..datamaking.pipeline import step_complete

    if step_complete(Path(out), stage, section, older=tuple(Path(o) for o in older)):
        click.echo(f"{out}: complete for this config and these inputs, skipped (--overwrite recomputes it)", err=True)
        return True
    return False


@data.command()
@out_opt
@config_opt
@set_opt
@recompute_opt
def collect(out, config_file, sets, overwrite) -> None:
    """Load every source and test set; write OUT (pool) and OUT's .tests.jsonl sibling.
    (Sources are datasets, not JSONL lines: a malformed source fails its load, so there is no --skip-bad.)"""
    from ..datamaking import collect as c

    cfg = _cfg(config_file, sets)
    if not overwrite and _skip_complete(out, "data.collect", cfg.collect, [c.tests_path(out)]):
        return
    st = c.run(out, cfg.collect)
    click.echo(c.markdown_table(st))
    if st["missing"]:
        click.echo(f"missing (skipped): {', '.join(st['missing'])}", err=True)


@data.command()
@click.argument("inp", type=click.Path(exists=True, dir_okay=False))
@click.option("--tests", required=True, type=click.Path(exists=True, dir_okay=False), help="Test-set JSONL from collect.")
@out_opt
@config_opt
@set_opt
@skip_bad_opt
@recompute_opt
def dedup(inp, tests, out, config_file, sets, skip_bad, overwrite) -> None:
    """Self-dedup and decontaminate INP against --tests; writes OUT, OUT.removed.jsonl, OUT.stats.json."""
    from ..datamaking import dedup as d

    refuse_output_in_inputs(out, [inp, tests])
    cfg = _cfg(config_file, sets)
    if not overwrite and _skip_complete(out, "data.dedup", cfg.dedup, [inp, tests]):
        return
    st = d.run(inp, tests, out, cfg.dedup, skip_bad=skip_bad, log=lambda s: click.echo(s, err=True))
    click.echo(d.markdown_steps(st))
    click.echo(f"kept {st['kept']:,} of {st['inputs']:,}")


def _llm_command(name: str, section: str, keys: tuple[str, ...], doc: str):
    @data.command(name, help=doc)
    @click.argument("inp", type=click.Path(exists=True, dir_okay=False))
    @out_opt
    @config_opt
    @set_opt
    @model_opt
    @base_url_opt
    @limit_opt
    @mnt_opt
    @overwrite_opt
    @skip_bad_opt
    def cmd(inp, out, config_file, sets, model, base_url, limit, max_new_tokens, overwrite, skip_bad):
        import importlib

        refuse_output_in_inputs(out, [inp])
        mod = importlib.import_module(f"safekey.datamaking.{name}")
        cfg = _cfg(config_file, sets, [f"{section}.{k}" for k in keys], model, base_url, max_new_tokens)
        try:
            st = mod.run(inp, out, getattr(cfg, section), overwrite=overwrite, skip_bad=skip_bad, limit=limit)
        finally:
            from ..datamaking.llmcall import close_backends

            close_backends()
        _report(st)

    return cmd


_llm_command("classify", "classify", ("judge",), "Label each prompt of INP with policy categories (JSON, validated).")
_llm_command("reason", "reason", ("teacher",), "Write policy-grounded <think>…</think> + answer for each classified prompt.")
_llm_command("score", "score", ("judge",), "Score each reasoning trace on 3 criteria (0–10, strict JSON).")
_llm_command("benign", "benign", ("rewriter", "teacher", "judge"),
             "Rewrite selected prompts into harmless look-alikes, answer, score 1–5 (then run `data benign-filter`).")


@data.command("select")
@click.argument("inp", type=click.Path(exists=True, dir_okay=False))
@out_opt
@config_opt
@set_opt
@click.option("-n", "n", type=click.IntRange(1), help="How many to keep (default 1000).")
@skip_bad_opt
@recompute_opt
def select_cmd(inp, out, config_file, sets, n, skip_bad, overwrite) -> None:
    """Keep all-10, non-Other items; balance sources × categories down to N (deterministic)."""
    from ..datamaking import select as s

    refuse_output_in_inputs(out, [inp])
    cfg = _cfg(config_file, [*([f"select.n={n:d}"] if n else []), *sets])
    if not overwrite and _skip_complete(out, "data.select", cfg.select, [inp]):
        return
    st = s.run(inp, out, cfg.select, skip_bad=skip_bad)
    click.echo(json.dumps({k: st[k] for k in ("inputs", "eligible", "selected", "by_source")}))


@data.command("mix")
@click.option("--harmful", "harmful", multiple=True, help="A harmful source (file or hub id): unsafe=1 where unset.")
@click.option("--benign", "benign", multiple=True, help="A benign source (e.g. UCSC-VLAA/STAR-benign-915): unsafe=0.")
@out_opt
def mix_cmd(harmful, benign, out) -> None:
    """One training file from harmful and benign sources (SafeKey trains on STAR-1 + STAR-benign-915)."""
    from ..datamaking.mix import mix

    refuse_output_in_inputs(out, [*harmful, *benign])
    st = mix([("harmful", h) for h in harmful] + [("benign", b) for b in benign], out)
    click.echo(json.dumps({k: st[k] for k in ("records", "unsafe")}))


@data.command("pairs")
@click.argument("inp", type=click.Path(exists=True, dir_okay=False))
@out_opt
@click.option("--policy", default=None, help="kind:model of the policy (the model to be trained) [default: hf:smollm2-135m].")
@base_url_opt
@click.option("--judge", default=None, help="Any safekey judge (marks unsafe traces, checks the continuations) [default: keyword].")
@click.option("--judge-model", default=None)
@click.option("--judge-base-url", default=None)
@mnt_opt
@limit_opt
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML PairsConfig.")
@set_opt
@overwrite_opt
@skip_bad_opt
@click.option("--no-progress", is_flag=True)
def pairs_cmd(inp, out, policy, base_url, judge, judge_model, judge_base_url, max_new_tokens, limit, config_file, sets,
              overwrite, skip_bad, no_progress) -> None:
    """Intervened preference pairs (IPO): the policy's unsafe traces cut at their first compliance cue and
    continued from a safety trigger (chosen) vs the original trace (rejected); benign over-refusals the same
    way. Output: every input with a status; `status: pair` rows are what `train run --mode dpo` reads."""
    from ..config import load_config
    from ..datamaking.pairs import PairsConfig, run

    cfg = load_config(PairsConfig, config_file, sets, policy=policy, base_url=base_url, judge=judge,
                      judge_model=judge_model, judge_base_url=judge_base_url, max_new_tokens=max_new_tokens)
    refuse_output_in_inputs(out, [inp])
    st = run(inp, out, cfg, overwrite=overwrite, skip_bad=skip_bad, limit=limit, progress=not no_progress)
    click.echo(json.dumps({k: st.get(k) for k in ("pairs", "status", "cue_found_share", "cue_detectors", "failed")}))


@data.command("benign-filter")
@click.argument("inp", type=click.Path(exists=True, dir_okay=False))
@out_opt
def benign_filter(inp, out) -> None:
    """Keep the all-5 benign look-alikes of INP (from `data benign`) as records with unsafe=0."""
    from ..datamaking import benign as b

    refuse_output_in_inputs(out, [inp])
    st = b.finalize(inp, out)
    click.echo(json.dumps({k: st[k] for k in ("scored", "kept_all_5")}))


@data.command()
@click.argument("config_arg", required=False, type=click.Path(exists=True, dir_okay=False), metavar="[CONFIG]")
@config_opt
@set_opt
@click.option("-o", "--out-dir", "out_dir", help="Where every step's files go (overrides out_dir).")
@click.option("--overwrite", is_flag=True, help="Redo every step instead of skipping the finished ones.")
@skip_bad_opt
def pipeline(config_arg, config_file, sets, out_dir, overwrite, skip_bad) -> None:
    """Run the configured steps in order; rerun the same command to resume after any interruption.
    CONFIG may be given as the argument or as --config."""
    from ..datamaking import pipeline as p
    from ..datamaking.llmcall import close_backends
    from ..types import SafekeyError

    if config_arg and config_file and config_arg != config_file:
        raise SafekeyError("give the data config once: as the argument or as --config")
    if not (config_arg or config_file):
        raise SafekeyError("data pipeline needs a config (configs/data/*.yaml), as the argument or --config")
    cfg = _cfg(config_arg or config_file, [*sets, *([f"out_dir={out_dir}"] if out_dir else [])])
    try:
        summary = p.run(cfg, log=lambda s: click.echo(s, err=True), overwrite=overwrite, skip_bad=skip_bad)
    finally:
        close_backends()
    click.echo(json.dumps(summary))
