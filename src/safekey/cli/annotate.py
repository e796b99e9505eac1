"""`safekey annotate RECORDS -o OUT`: add the U/K spans (u_end, k_end, k_text, k_is_safety)."""

from __future__ import annotations

from pathlib import Path

import click


def _print_stats(stats: dict) -> None:
    """The U-length histogram and safety-aha share, as a table (the numbers are in NAME.stats.json)."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    n = stats.get("annotated", 0)
    con.print(
        f"annotated {n}/{stats.get('inputs', 0)} ({100 * stats.get('annotated_share', 0):.1f}%), "
        f"failed {stats.get('failed', 0)} {stats.get('failure_reasons', {})}"
    )
    t = Table(title="U length (sentences)")
    t.add_column("U sentences", justify="right")
    t.add_column("records", justify="right")
    t.add_column("share", justify="right")
    t.add_column("")
    hist = stats.get("u_sentences_hist", {})
    peak = max(hist.values(), default=1)
    for k, v in hist.items():
        t.add_row(k, str(v), f"{100 * v / max(n, 1):.1f}%", "#" * max(1, round(40 * v / peak)))
    con.print(t)
    uc = stats.get("u_chars", {})
    if uc:
        con.print(f"U chars: mean {uc['mean']}, p10 {uc['p10']:.0f}, median {uc['median']:.0f}, p90 {uc['p90']:.0f}")
    con.print(f"safety-aha share (K voices a safety concern / invokes policy): {100 * stats.get('safety_aha_share', 0):.1f}%")
    if stats.get("llm_fallbacks"):
        con.print(f"llm fallbacks to heuristic: {stats['llm_fallbacks']}")
    con.print(f"{stats.get('seconds', 0):.1f} s → {stats.get('output')}")


@click.command("annotate")
@click.argument("records", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False), help="Output JSONL (one RECORDS file).")
@click.option("--beside", is_flag=True, help="Write each RECORDS file's output beside it as NAME.uk.jsonl (eval responses "
              "for the report's U/K highlight); responses without a complete <think> are only counted, never an error.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML LabellerConfig (labeller, model, max_u_sentences, …); the flags below override it.")
@click.option("--set", "overrides", multiple=True, help="key=value override, e.g. --set max_u_sentences=3 (repeatable).")
@click.option("--labeller", type=click.Choice(["heuristic", "llm"]), default=None, help="[default: heuristic]")
@click.option("--model", default=None, help="Backend for --labeller llm, kind:model (hf:smollm2-135m, openai:gpt-4o).")
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint for --model openai:…")
@click.option("--llm-safety", is_flag=True, help="Take k_is_safety from the LLM's answer instead of the lexicon.")
@click.option("--fallback", type=click.Choice(["heuristic"]), default=None,
              help="Label records whose LLM reply is unusable with the heuristic (counted as llm_fallbacks). "
                   "Default: they fail and are retried on the next run.")
@click.option("--skip-bad", is_flag=True, help="Skip malformed input lines (kept in OUT's rejects file).")
@click.option("--overwrite", is_flag=True, help="Start OUT afresh instead of resuming.")
@click.option("--stats", "show_stats", is_flag=True, help="Print the U-length histogram and the safety-aha share.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def annotate(records, out, config_file, overrides, labeller, model, base_url, llm_safety, fallback, skip_bad, overwrite,
             show_stats, progress, beside) -> None:
    """Find the understanding span U and key sentence K of every record's <think> trace.

    Adds u_end, k_end (character offsets into response), k_text, k_is_safety, u_sentences and
    uk_labeller. Records without a usable trace go to OUT's failures file with a reason.
    """
    from ..annotate.labellers import LabellerConfig
    from ..annotate.stage import annotate_file
    from ..config import load_config

    cfg = load_config(LabellerConfig, config_file, overrides, labeller=labeller, model=model, base_url=base_url,
                      llm_safety=True if llm_safety else None, fallback=fallback)
    from ..paths import refuse_output_in_inputs
    from ..types import SafekeyError

    if beside:
        if out:
            raise SafekeyError("--beside writes NAME.uk.jsonl next to each input; drop -o")
        for rec in records:
            dst = Path(rec).with_name(Path(rec).stem + ".uk.jsonl")
            refuse_output_in_inputs(dst, list(records))
            stats = annotate_file(rec, dst, cfg, skip_bad=skip_bad, overwrite=overwrite, progress=progress,
                                  max_failure_share=None)  # a model that never writes <think> fails them all: fine here
            click.echo(f"annotated {stats['annotated']}/{stats['inputs']} → {dst}")
        return
    if len(records) != 1 or not out:
        raise SafekeyError("give one RECORDS file and -o OUT (or several with --beside)")
    records = records[0]
    refuse_output_in_inputs(out, [records])
    stats = annotate_file(records, out, cfg, skip_bad=skip_bad, overwrite=overwrite, progress=progress)
    if show_stats:
        _print_stats(stats)
    else:
        click.echo(
            f"annotated {stats['annotated']}/{stats['inputs']}, failed {stats['failed']} "
            f"{stats['failure_reasons'] or ''}"
            + (f", heuristic fallbacks {stats['llm_fallbacks']}" if stats.get("llm_fallbacks") else "") + f" → {out}"
        )
