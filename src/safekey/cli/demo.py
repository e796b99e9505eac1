"""`safekey demo`: the offline end-to-end demo on the embedded SmolLM2 (CPU, a few minutes)."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option("-o", "--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default=None, help="Base model (alias, folder or hub id) [default: smollm2-135m].")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs [default: 1].")
@click.option("--train-limit", type=click.IntRange(2), default=None, help="Use the first N starter records [default: 64 of 128].")
@click.option("--eval-limit", type=click.IntRange(1), default=None, help="N items of each held-out file [default: all 24].")
@click.option("--max-new-tokens", type=click.IntRange(1), default=None, help="[default: 96]")
@click.option("--full", is_flag=True, help="Full fine-tuning instead of LoRA on the top 8 layers (slower).")
@click.option("--analyses", is_flag=True, help="Also run the attention / probe / KL analyses (+ a few minutes).")
@click.option("--fresh", is_flag=True, help="Delete OUT first instead of resuming.")
def demo(out_dir, model, epochs, train_limit, eval_limit, max_new_tokens, full, analyses, fresh):
    """Base SmolLM2 → SFT and SafeKey on the starter data → held-out safety eval → report.

    The `demo` preset (`safekey run demo` is the same run; these flags are --set overrides of it).
    Offline and CPU-only. Prints progress with an ETA; rerun to resume after an interruption.
    Writes OUT/report.html and prints the harmful-compliance / over-refusal table with 95% CIs.
    """
    from ..demo import markdown_table, overrides, run_demo

    sets = overrides(model=model, epochs=epochs, train_limit=train_limit, eval_limit=eval_limit,
                     max_new_tokens=max_new_tokens, full=full, analyses=analyses)
    t0 = time.time()
    click.echo(f"safekey demo → {out_dir}  (the demo preset{': ' + ' '.join(sets) if sets else ''}; judge: keyword, "
               "an offline proxy)")
    res = run_demo(out_dir, sets, echo=click.echo, fresh=fresh)
    exp = res["experiment"]
    click.echo("")
    click.echo(markdown_table(res["table"], exp.model))
    click.echo("")
    click.echo("Judge: keyword (refusal detector; an offline PROXY for harmfulness). 95% Wilson CIs; items whose thinking "
               "never closed are not judged (n < 24 in a cell).")
    click.echo(f"wall time {int(time.time() - t0) // 60} min {int(time.time() - t0) % 60} s; report: {res['report']}")
