"""`safekey analyze attention|probe|kl`: the SafeKey paper's analyses (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

import click

from ..store import output_lock
from ..types import SafekeyError

MODEL_HELP = "Model to analyse: folder, alias or hf:PATH, optionally LABEL=… (repeatable)."


def _guard(out: Path, inputs: list) -> None:
    from ..paths import refuse_output_in_inputs

    refuse_output_in_inputs(out, [i for i in inputs if i])  # inputs that do not exist are skipped there


def _models(values: tuple[str, ...]) -> list[tuple[str, str]]:
    from ..analyze.common import parse_model_arg

    if not values:
        raise SafekeyError("give at least one --model")
    out = [parse_model_arg(v) for v in values]
    labels = [lbl for lbl, _ in out]
    if len(set(labels)) != len(labels):
        raise SafekeyError(f"two models share a label {labels}; name them LABEL=PATH")
    return out


@click.group()
def analyze() -> None:
    """The SafeKey paper's analyses; each writes a JSON that `safekey report` renders."""


@analyze.command()
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "models", multiple=True, help=MODEL_HELP)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option("--max-tokens", type=click.IntRange(16), default=1024, show_default=True)
def attention(records, models, out, limit, max_tokens):
    """Attention mass from K tokens onto U vs onto the query (RECORDS need u_end, k_end)."""
    from ..analyze.attention import run_attention

    ms = _models(models)
    _guard(out, [records, *[m for _, m in ms]])
    with output_lock(out):
        res = run_attention(records, ms, out, limit=limit, max_tokens=max_tokens)
    for label, m in res["models"].items():
        s = m["summary"]["all"]
        click.echo(f"{label:24s} n={s['n']:4d}  K→U {s['u']['mean']:.3f} [{s['u']['ci'][0]:.3f}, {s['u']['ci'][1]:.3f}]"
                   f"  K→query {s['query']['mean']:.3f} [{s['query']['ci'][0]:.3f}, {s['query']['ci'][1]:.3f}]")
    click.echo(f"→ {out}")


@analyze.command()
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "models", multiple=True, help=MODEL_HELP)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True)
@click.option("--max-tokens", type=click.IntRange(16), default=1024, show_default=True)
def probe(records, models, out, limit, folds, max_tokens):
    """Cross-validated AUROC of a linear probe for `unsafe` on the hidden state at the end of U."""
    from ..analyze.probe import run_probe

    ms = _models(models)
    _guard(out, [records, *[m for _, m in ms]])
    with output_lock(out):
        res = run_probe(records, ms, out, limit=limit, folds=folds, max_tokens=max_tokens)
    for label, m in res["models"].items():
        click.echo(f"{label:24s} n={m['n']:4d}  AUROC last layer {m['last_layer']:.3f}  best {m['best']:.3f} (layer {m['best_layer']})")
    click.echo(f"→ {out}")


@analyze.command()
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-a", required=True, help="Reference model P (KL(P‖Q)), LABEL=… allowed.")
@click.option("--model-b", "models_b", multiple=True, required=True, help="Compared model(s) Q (repeatable).")
@click.option("--ks", default="0,1,2,4,8,16,32", show_default=True, help="Prefill lengths in response tokens.")
@click.option("--field", default="response", show_default=True, help="Record field holding the text to prefill.")
@click.option("--only-unsafe", is_flag=True, help="Use only records with unsafe=1.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(1), default=None)
def kl(records, model_a, models_b, ks, field, only_unsafe, out, limit):
    """KL between next-token distributions of two models after k prefilled response tokens."""
    from ..analyze.common import parse_model_arg
    from ..analyze.kl import run_kl

    try:
        k_list = sorted({int(x) for x in ks.split(",") if x.strip()})
    except ValueError:
        raise SafekeyError(f"--ks {ks!r} must be comma-separated integers") from None
    if not k_list or k_list[0] < 0:
        raise SafekeyError("--ks needs non-negative integers")
    la, sa = parse_model_arg(model_a)
    pairs = [(la, sa, *parse_model_arg(b)) for b in models_b]
    _guard(out, [records])
    with output_lock(out):
        res = run_kl(records, pairs, out, ks=k_list, limit=limit, field=field, only_unsafe=only_unsafe)
    for p in res["pairs"]:
        row = "  ".join(f"k={k}: {v['mean']:.3f}" for k, v in p["per_k"].items() if v["n"])
        click.echo(f"KL({p['a']}‖{p['b']})  {row}")
    click.echo(f"→ {out}")


@analyze.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def aha(runs, out):
    """The safety aha moment on eval runs' own generations: per model × benchmark, the share of
    key sentences K that voice a safety concern, the harmful rate given aha vs no aha (Wilson 95 %),
    and the items without a U/K by reason. Works on R1-style outputs that start inside <think>."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ..analyze.aha import aha_inputs, aha_report, aha_summary
    from ..annotate.labellers import LabellerConfig
    from ..annotate.stage import annotate_file
    from ..metrics import fmt_rate
    from ..store import write_stats

    _guard(out, list(runs))
    # the labels live beside the output (OUT.work/NN-RUN/BENCH/…): the eval runs are only read
    work = out.with_name(out.name + ".work")
    summaries = []
    with output_lock(out):
        for i, run in enumerate(runs):
            wdir = work / f"{i:02d}-{run.resolve().name}"
            prepared = aha_inputs(run, wdir)
            for src, dst, _ in prepared.values():
                annotate_file(src, dst, LabellerConfig(), overwrite=True, max_failure_share=None)
            summaries.append(aha_summary(run, wdir, {b: p[2] for b, p in prepared.items()}))
        write_stats(out, aha_report(summaries))
    t = Table(title="safety aha moment (K voices a safety concern)")
    for col in ("model", "benchmark", "n", "with U/K", "aha rate", "harmful | aha", "harmful | no aha", "no U/K (why)"):
        t.add_column(col)
    for s in summaries:
        for b, m in s["benchmarks"].items():
            t.add_row(s["label"], b, str(m["n"]), str(m["with_uk"]), fmt_rate(m["aha_rate"]), fmt_rate(m["harmful_given_aha"]),
                      fmt_rate(m["harmful_given_no_aha"]), json.dumps(m["no_uk"]))
    Console(width=170).print(t)
    click.echo(f"aha: {out}")
