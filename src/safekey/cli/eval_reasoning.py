"""`safekey eval reasoning`: MATH-500, AIME 2024, GPQA-Diamond, MMLU-Pro, HumanEval (sandboxed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..types import SafekeyError


def _parse_limit(text: str | None) -> int | dict[str, int] | None:
    from ..evals.reasoning_benchmarks import get_benchmark
    from ..subsample import parse_limit

    return parse_limit(text, lambda k: get_benchmark(k).name)


def _parse_sources(values: tuple[str, ...]) -> dict[str, str]:
    from ..evals.reasoning_benchmarks import get_benchmark

    out = {}
    for v in values:
        if "=" not in v:
            raise SafekeyError(f"--source {v!r} must look like BENCH=PATH (e.g. math500=./test.jsonl)")
        k, p = v.split("=", 1)
        out[get_benchmark(k).name] = p
    return out


@click.command("reasoning")
@click.option("--model", default=None, help="kind:model, e.g. hf:smollm2-135m, hf:/path/ckpt, openai:NAME. [default: hf:smollm2-135m]")
@click.option("--bench", "benches", default=None,
              help="Comma-separated: math500, aime2024, gpqa_diamond, mmlu_pro, humaneval (default: all five).")
@click.option("--canonical", is_flag=True, help="Grade each benchmark's reference answers (grader self-check; no model).")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run folder (RUN/<bench>/generations.jsonl, graded.jsonl, RUN/summary.json).")
@click.option("--limit", default=None, help="N items of each benchmark (a seeded sample stratified by subject), or per "
              "benchmark: math500=20,humaneval=10.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=None, help="[default: 8192]")
@click.option("--temperature", type=click.FloatRange(0), default=None, help="[default: 0, greedy]")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, help="[default: 1.0]")
@click.option("--repetition-penalty", type=click.FloatRange(0, min_open=True), default=None,
              help="Off by default: a penalty on repeated tokens distorts math and code answers (eval safety uses the "
                   "reference's 1.2). [default: 1.0]")
@click.option("--samples", type=click.IntRange(1, 1024), default=None, help="Generations per item (pass@k). [default: 1]")
@click.option("--pass-k", default=None, help="Comma-separated k for pass@k (HumanEval), each <= --samples. [default: 1]")
@click.option("--seed", type=int, default=None, help="GPQA choice shuffles and the MMLU-Pro sample. [default: 0]")
@click.option("--source", "sources", multiple=True, help="BENCH=PATH: read a benchmark from a local file or hub id.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Parallel sandboxed HumanEval runs. [default: 2]")
@click.option("--overwrite", is_flag=True, help="Discard earlier outputs in the run folder instead of resuming.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML ReasoningConfig.")
@click.option("--set", "overrides", multiple=True, help="key=value override of the config (repeatable).")
@click.option("--label", default=None, help="How reports name this model (default: the run folder's name).")
@click.option("--no-progress", is_flag=True, help="No progress bars (logs and pipelines; what `safekey run` passes).")
def reasoning(model, benches, canonical, out, limit, max_new_tokens, temperature, top_p, repetition_penalty, samples,
              pass_k, seed, sources, workers, overwrite, config_file, overrides, label, no_progress) -> None:
    """Measure general ability (the cost of safety training): accuracy with 95% CIs per benchmark (Wilson for shares).

    Answers are read after </think> only; math is checked with math-verify; HumanEval code runs in
    a sandbox (separate process, rlimits, no network). Resumes where it stopped.
    """
    from rich.console import Console
    from rich.table import Table

    from ..config import load_config
    from ..evals.reasoning import ReasoningConfig, headline, run_reasoning_eval
    from ..metrics import fmt_rate

    values = {
        "model": model,
        "benchmarks": [b.strip() for b in benches.split(",") if b.strip()] if benches else None,
        "limit": _parse_limit(limit),
        "sampling.max_tokens": max_new_tokens,
        "sampling.temperature": temperature,
        "sampling.top_p": top_p,
        "sampling.repetition_penalty": repetition_penalty,
        "samples": samples,
        "pass_k": [int(k) for k in pass_k.split(",")] if pass_k else None,
        "seed": seed,
        "sources": _parse_sources(sources) or None,
        "sandbox.workers": workers,
        "label": label,
    }
    cfg = load_config(ReasoningConfig, config_file, overrides, **values)
    from ..evals.reasoning_benchmarks import get_benchmark

    cfg = cfg.model_copy(update={"benchmarks": [get_benchmark(b).name for b in cfg.benchmarks]})
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # logs and pipes: keep the table on one line per row
    tmp = None
    if out is None:
        if not canonical:
            raise SafekeyError("give a run folder with -o/--out")
        tmp = tempfile.TemporaryDirectory(prefix="safekey-canonical-")
        out = tmp.name
    try:
        summary = run_reasoning_eval(cfg, out, canonical=canonical, overwrite=overwrite, progress=not no_progress,
                                     log=lambda s: console.print(s, style="dim", highlight=False))
        table = Table(title=f"reasoning · {summary['model']} · max_tokens={cfg.sampling.max_tokens}")
        for col in ("benchmark", "n", "metric", "score [95% CI]", "no answer", "gen. failures"):
            table.add_column(col)
        for name, b in summary["benchmarks"].items():
            if name not in cfg.benchmarks:
                continue
            metric, r = headline(b)
            table.add_row(name, str(b["n"]), metric, fmt_rate(r), fmt_rate(b["metrics"]["no_answer_rate"]),
                          str(b["generation_failures"]))
        console.print(table)
        if canonical:
            for name in cfg.benchmarks:
                b = summary["benchmarks"][name]
                _, r = headline(b)
                passed = round(r["rate"] * r["n"]) if r["n"] else 0
                click.echo(f"{name}: pass: {passed}/{r['n']}")
        if tmp is None:
            click.echo(f"summary: {Path(out) / 'summary.json'}")
    finally:
        if tmp is not None:
            tmp.cleanup()
