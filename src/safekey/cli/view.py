"""`safekey view RUN… -o view.html`: every judged item in one static, filterable page."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("view")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", default="view.html", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--title", default="safekey judged items", show_default=True)
def view(runs, out, title):
    """Write a self-contained HTML page listing the judged items of RUNS (safety eval folders or any
    folder above them), filterable by model, benchmark, verdict, category, judge disagreement and
    model disagreement, with a text search. No server needed: open the file."""
    from ..paths import refuse_output_in_inputs
    from ..report.viewer import build_viewer
    from ..store import output_lock

    refuse_output_in_inputs(out, list(runs), own_marker='<meta name="generator" content="safekey view">')
    with output_lock(out):
        path = build_viewer(list(runs), out, title=title)
    click.echo(f"viewer: {path} ({path.stat().st_size // 1024} KiB)")
