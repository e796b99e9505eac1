"""Entry point: `safekey GROUP COMMAND …`.

Subcommand modules are imported lazily so `safekey --help` stays instant (no torch import), and a
:class:`SafekeyError` anywhere is printed as one clear line instead of a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from .. import __version__
from ..types import SafekeyError

# name -> (module, attribute, one-line help). Each module owns its group.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("safekey.cli.data", "data", "STAR-1 data making: collect, dedup, classify, reason, score, select, benign."),
    "annotate": ("safekey.cli.annotate", "annotate", "Find the understanding span U and key sentence K in reasoning traces."),
    "train": ("safekey.cli.train", "train", "Fine-tune: SFT (STAR-1), SafeKey (SFT + safety head + query-mask), DPO (intervened, IPO) or GRPO (RECAP)."),
    "eval": ("safekey.cli.eval", "eval_group", "Evaluate models: safety benchmarks and judges, reasoning benchmarks."),
    "report": ("safekey.cli.report", "report", "Build an HTML report from evaluation and training runs."),
    "analyze": ("safekey.cli.analyze", "analyze", "The SafeKey paper's analyses: attention to U, probes, KL after prefill."),
    "demo": ("safekey.cli.demo", "demo", "Offline end-to-end demo on the embedded SmolLM2 (CPU)."),
    "models": ("safekey.cli.models", "models", "Prepare and list models (the embedded SmolLM2, tiny test models)."),
    "view": ("safekey.cli.view", "view", "A static, filterable page of every judged item (verdict, category, disagreement)."),
    "run": ("safekey.cli.run", "run", "Run one experiment file or preset: annotate → train → evals → analyses → report."),
    "doctor": ("safekey.cli.doctor", "doctor", "Check keys, endpoints, weights, GPU and disk before a run."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        mod, attr, _ = COMMANDS[name]
        if importlib.util.find_spec(mod) is None:
            return None
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="safekey")
def cli() -> None:
    """safekey — safety alignment of reasoning LLMs.

    Every stage reads JSONL records and writes JSONL records, resumes where it stopped, and
    writes NAME.stats.json and NAME.config.yaml beside its output.
    """


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..redact import redact_logging

    redact_logging()  # no credential reaches the console through a log line (httpx logs request URLs)
    try:
        cli.main(args=argv, prog_name="safekey", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SafekeyError as e:
        from ..redact import redact_secrets, terminal_safe

        click.echo(f"error: {terminal_safe(redact_secrets(str(e)))}", err=True)
        sys.exit(2)
    except OSError as e:  # an unwritable -o, an output whose parent is a file, a folder given as a file …
        from ..redact import redact_secrets, terminal_safe

        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"error: {terminal_safe(redact_secrets(where + (e.strerror or str(e))))}", err=True)
        sys.exit(2)
    except RecursionError:
        click.echo("error: an input is nested too deeply to read", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted — rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
