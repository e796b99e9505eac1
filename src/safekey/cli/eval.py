"""`safekey eval …`: the group; each evaluation lives in its own module and is attached lazily."""

from __future__ import annotations

import importlib

import click

SUBCOMMANDS = {
    "safety": ("safekey.cli.eval_safety", "safety", "Generate on safety benchmarks, judge, aggregate with CIs."),
    "compare": ("safekey.cli.eval_safety", "compare", "Deltas with CIs between two evaluation runs."),
    "rejudge": ("safekey.cli.eval_safety", "rejudge_cmd", "Judge a finished run's generations again, generating nothing."),
    "agree": ("safekey.cli.eval_safety", "agree_cmd", "Judge agreement (kappa, alpha) and judges vs human labels."),
    "reasoning": ("safekey.cli.eval_reasoning", "reasoning", "MATH-500, AIME, GPQA, MMLU-Pro, HumanEval (sandboxed)."),
}


class _Lazy(click.Group):
    def list_commands(self, ctx):
        return [n for n, (m, _, _) in SUBCOMMANDS.items() if importlib.util.find_spec(m) is not None]

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS or importlib.util.find_spec(SUBCOMMANDS[name][0]) is None:
            return None
        mod, attr, _ = SUBCOMMANDS[name]
        return getattr(importlib.import_module(mod), attr, None)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(n, SUBCOMMANDS[n][2]) for n in self.list_commands(ctx)])


@click.group("eval", cls=_Lazy)
def eval_group() -> None:
    """Evaluate models. Every eval takes --model (kind:model, e.g. hf:smollm2-135m or openai:gpt-4o),
    --limit N, --max-new-tokens, -o RUN_DIR; it resumes, and writes per-item JSONL + summary.json."""
