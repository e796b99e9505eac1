"""`safekey report RUN… [-o report.html]`."""

from __future__ import annotations

from pathlib import Path

import click

GENERATOR = '<meta name="generator" content="safekey report">'  # marks a file this command may replace


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", default="report.html", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--title", default="safekey report", show_default=True)
@click.option("--examples", "examples_per_bench", type=click.IntRange(0), default=2, show_default=True,
              help="Side-by-side examples per benchmark.")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "latex", "csv"]), default="html", show_default=True,
              help="html: the full report; md / latex / csv: the paper table only (models × benchmarks).")
@click.option("--baseline", default=None, help="Label of the run every other row gets a paired Δ against (pp).")
@click.option("--allow-mismatch", is_flag=True, help="Build the table from runs with different judges, sampling or "
              "item samples anyway; the differences are listed under the table. [default: refuse]")
def report(runs, out, title, examples_per_bench, fmt, baseline, allow_mismatch):
    """Build one self-contained HTML report from RUNS (eval run folders, training folders, analysis
    JSON files, or any folder above them — they are discovered), or the paper table alone."""
    from ..paths import refuse_output_in_inputs
    from ..store import output_lock

    to_stdout = fmt != "html" and out.name == "report.html"  # the default -o with a table format: print it
    if not to_stdout:
        refuse_output_in_inputs(out, list(runs), own_marker=GENERATOR if fmt == "html" else None,
                                own_suffixes={"md": (".md",), "latex": (".tex",), "csv": (".csv",)}.get(fmt, ()))
    if fmt != "html":
        from ..report.collect import collect
        from ..report.paper_table import paper_table, to_csv, to_latex, to_markdown
        from ..types import SafekeyError

        evals = [e for e in collect(list(runs)).evals]
        if not evals:
            raise SafekeyError(f"no eval run under {', '.join(map(str, runs))}")
        # one convention with the HTML report: --baseline, else the experiment's report.baseline, else the first run
        from ..report.build import resolve_baseline

        table = paper_table(evals, baseline=resolve_baseline(list(runs), evals, baseline) if baseline or len(evals) > 1 else None)
        table["footer"] += [f"NOT COMPARABLE: {p}" for p in _mismatches(evals, allow_mismatch)]
        text = {"md": to_markdown, "latex": to_latex, "csv": to_csv}[fmt](table)
        if fmt in ("md", "latex"):
            from ..report import seeds

            manifest = seeds.find_manifest(list(runs))
            study = seeds.seed_study(manifest, evals) if manifest else None
            if study is not None and len(study.get("seeds") or []) > 1:
                title = "Across training seeds (mean ± sd; [pooled 95 % CI]; Δ vs " + str(study["baseline"]) + " in pp)"
                text += (f"\n\n{title}:\n\n" + seeds.to_markdown(study) + "\n" if fmt == "md"
                         else f"\n% {title}\n" + seeds.to_latex(study))
        if to_stdout:
            click.echo(text, nl=False)
        else:
            from ..atomic import write_text_atomic

            with output_lock(out):
                write_text_atomic(out, text)
            click.echo(f"table: {out}")
        return
    from ..report import build_report
    from ..report.collect import collect

    problems = _mismatches(collect(list(runs)).evals, allow_mismatch)
    with output_lock(out):
        path = build_report(list(runs), out, title=title, examples_per_bench=examples_per_bench, mismatches=problems,
                            baseline=baseline)
    click.echo(f"report: {path} ({path.stat().st_size // 1024} KiB)")


def _mismatches(evals, allow: bool) -> list[str]:
    """The settings that make rows incomparable: refused (one line) unless --allow-mismatch."""
    from ..report.collect import comparability_problems
    from ..types import SafekeyError

    problems = comparability_problems(evals)
    if problems and not allow:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SafekeyError(f"these runs are not comparable — {problems[0]}{more}; report them apart, or pass "
                           "--allow-mismatch to build the table with the differences listed under it")
    return problems
