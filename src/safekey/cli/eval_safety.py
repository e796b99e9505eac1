"""`safekey eval safety` and `safekey eval compare` (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path

import click

from ..evals.solvers.registry import solver_help
from ..judges.registry import judge_help


def _kv(values: tuple[str, ...]) -> dict[str, str]:
    from ..types import SafekeyError

    out = {}
    for v in values:
        if "=" not in v:
            raise SafekeyError(f"--bench-path {v!r} must look like NAME=PATH")
        k, p = v.split("=", 1)
        out[k.strip()] = p
    return out


@click.command("safety")
@click.option("--model", required=True, help="kind:model of the evaluated model (hf:smollm2-135m, openai:NAME, vllm:PATH).")
@click.option("--base-url", default=None, help="Endpoint of an openai-compatible evaluated model.")
@click.option("--bench", "benches", default="", help="Comma-separated: strongreject, strongreject-jailbreak, jbb-harmful, jbb-benign, wildjailbreak, wildchat, xstest, xstest-contrast, advbench, harmbench, prefilling, multiturn.")
@click.option("--bench-file", "bench_files", multiple=True, type=click.Path(path_type=Path),
              help="Custom JSONL benchmark: id, question|messages, unsafe 1/0, [category], [prefill]. Repeatable.")
@click.option("--bench-path", "bench_paths", multiple=True, help="NAME=PATH: read a registry benchmark from a local file.")
@click.option("--attack", "attacks", default=None, help="Comma-separated solvers, each run on every benchmark (one row "
              "per benchmark × attack, named BENCH@ATTACK) [default: none]. " + solver_help())
@click.option("--judge", default=None, help=judge_help())
@click.option("--judge-model", default=None, help="kind:model of an LLM judge (default: the papers' judge model).")
@click.option("--judge-ensemble", type=click.Choice(["majority", "any", "all"]), default=None,
              help="With --judge a,b[,c]: how the members' verdicts combine [default: majority; a tie is no verdict].")
@click.option("--judge-base-url", default=None, help="Endpoint of an openai-compatible judge.")
@click.option("--judge-part", type=click.Choice(["answer", "thinking", "think", "both", "full"]), default=None,
              help="What the judge sees: the final answer after </think> [answer], the thinking, both (two verdicts "
                   "per item and their 2x2 table), or everything.")
@click.option("--judge-max-tokens", type=int, default=None)
@click.option("--limit", default=None, help="N items of each benchmark, or BENCH=N,BENCH=N: a seeded sample stratified by "
              "category (seed: --limit-seed).")
@click.option("--limit-seed", type=int, default=None, help="Seed of the --limit sample [default: 0].")
@click.option("--max-judge-failures", type=click.FloatRange(0, 1), default=None,
              help="Share of a benchmark's items whose judging may fail before the run exits non-zero [default: 0.1].")
@click.option("--max-generation-failures", type=click.FloatRange(0, 1), default=None,
              help="The same for generation failures [default: 0.1].")
@click.option("--max-new-tokens", type=int, default=None, help="[default: 8000]")
@click.option("--temperature", type=float, default=None, help="[default: 0 = greedy]")
@click.option("--top-p", type=float, default=None, help="[default: 1.0]")
@click.option("--repetition-penalty", type=float, default=None,
              help="The SafeKey reference safety eval's setting (eval reasoning keeps 1.0: a penalty on repeated "
                   "tokens distorts math answers). [default: 1.2]")
@click.option("--seed", type=int, default=None)
@click.option("--samples", type=click.IntRange(1, 1024), default=None, help="Sampled safety: K generations per item (needs "
              "--temperature > 0) → Safe@1, Safe@K (all K safe), ConsSafe@K (majority safe) [default: 1, greedy].")
@click.option("--prefill-tokens", type=int, default=None, help="Prefilling attack: first N tokens of the harmful trace [20], counted with the evaluated model's tokenizer (whitespace words for openai: models).")
@click.option("--prefill-prefix", default=None, help='Text before the prefill, e.g. "<think>\\n" for templates that do not open it.')
@click.option("--batch-size", type=int, default=None, help="Generation batch (also the resume granularity) [default: 8].")
@click.option("--judge-batch-size", type=int, default=None, help="[default: 16]")
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(path_type=Path), help="Run folder (required).")
@click.option("--print-config", is_flag=True, help="Print the run's resolved settings (every attack's with its defaults "
              "filled in) as YAML and exit without running anything.")
@click.option("--overwrite", is_flag=True, help="Start the run folder afresh (generations and verdicts).")
@click.option("--rejudge", is_flag=True, help="Keep the generations, redo the judging (e.g. with another judge).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None, help="YAML SafetyEvalConfig.")
@click.option("--set", "overrides", multiple=True, help="key=value override of the config (repeatable).")
@click.option("--label", default=None, help="How reports name this model (default: the run folder's name).")
@click.option("--no-progress", is_flag=True)
def safety(model, base_url, benches, bench_files, bench_paths, attacks, judge, judge_model, judge_ensemble, judge_base_url, judge_part,
           judge_max_tokens, limit, limit_seed, max_judge_failures, max_generation_failures, max_new_tokens, temperature, top_p, repetition_penalty, seed, samples, prefill_tokens,
           prefill_prefix, batch_size, judge_batch_size, out_dir, print_config, overwrite, rejudge, config_file, overrides,
           label, no_progress):
    """Generate on safety benchmarks, judge, and aggregate rates with 95% CIs (Wilson for shares).

    Writes OUT/<bench>/generations.jsonl, OUT/<bench>/judged.jsonl and OUT/summary.json; rerun the
    same command to resume (failed generations and judge failures are retried).
    """
    from ..config import load_config
    from ..evals.safety import EvalFailed, SafetyEvalConfig, SafetyRun
    from ..evals.safety_benchmarks import parse_bench_list
    from ..subsample import parse_limit

    bench_list = parse_bench_list(benches) if benches else None
    limit = parse_limit(limit, lambda k: k.strip().lower())
    cfg = load_config(
        SafetyEvalConfig, config_file, overrides,
        model=model, base_url=base_url, benches=bench_list, bench_files=[str(f) for f in bench_files] or None,
        bench_paths=_kv(bench_paths) or None, attacks=[a for a in attacks.split(",") if a.strip()] if attacks else None,
        judge=judge, judge_model=judge_model, judge_ensemble=judge_ensemble,
        judge_base_url=judge_base_url,
        judge_part=judge_part, judge_max_tokens=judge_max_tokens, limit=limit, limit_seed=limit_seed,
        max_judge_failures=max_judge_failures, max_generation_failures=max_generation_failures, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed, samples=samples,
        prefill_tokens=prefill_tokens, prefill_prefix=prefill_prefix, batch_size=batch_size,
        judge_batch_size=judge_batch_size, label=label,
    )
    if print_config:
        click.echo(resolved_yaml(cfg), nl=False)
        return
    if out_dir is None:
        raise click.UsageError("Missing option '-o' / '--out'.")
    from ..paths import refuse_output_in_inputs

    refuse_output_in_inputs(out_dir, [*cfg.bench_files, *cfg.bench_paths.values()])  # --overwrite clears the run folder
    from ..judges import judge_registry

    defaults = judge_registry()[1]
    if cfg.judge in defaults and not cfg.judge_model:
        click.echo(f"judge {cfg.judge}: using the default judge model {defaults[cfg.judge]} "
                   "(--judge-model to choose another)", err=True)
    try:
        SafetyRun(cfg, out_dir, overwrite=overwrite, rejudge=rejudge, progress=not no_progress).run()
    except EvalFailed:
        _print_summary(out_dir, cfg.judge == "keyword")  # what was measured, then the one-line reason (exit 2)
        raise
    _print_summary(out_dir, cfg.judge == "keyword")


def resolved_yaml(cfg) -> str:
    """The eval's settings as it would run them, as YAML: the config with every attack's settings
    resolved (defaults filled in, credentials redacted)."""
    import yaml

    from ..evals.solvers.registry import resolved_settings
    from ..redact import redact_obj

    data = cfg.model_dump(mode="json")
    data["attack_settings"] = {a: resolved_settings(a, cfg.attack_settings.get(a)) for a in cfg.attacks if a != "none"}
    return yaml.safe_dump(redact_obj(data), sort_keys=False, allow_unicode=True)


def _print_summary(out_dir: Path, proxy: bool) -> None:
    import json

    from rich.console import Console

    from ..evals.safety import summary_table

    summary = json.loads((out_dir / "summary.json").read_text())
    Console(width=160).print(summary_table(summary, proxy_note=proxy))
    failures = sum(b["judge_failures"] + b["generation_failures"] for b in summary["benchmarks"].values())
    if failures:
        click.echo(f"{failures} item(s) failed (see */*.failures.jsonl); rerun the same command to retry them.", err=True)
    click.echo(f"summary: {out_dir / 'summary.json'}")


@click.command("compare")
@click.argument("run_a", type=click.Path(exists=True, path_type=Path))
@click.argument("run_b", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@click.option("--strict", is_flag=True, help="Refuse runs whose judge, judge model, template, judged part or sampling differ.")
def compare(run_a, run_b, as_json, strict):
    """Deltas B − A with 95% bootstrap CIs for every shared benchmark/metric (paired by item id;
    safety or reasoning runs). A, B and Δ are computed on the items both runs have."""
    import json

    from rich.console import Console

    from ..evals.compare import compare_runs, compare_table

    result = compare_runs(run_a, run_b, strict=strict)
    for m in result["mismatches"]:
        click.echo(f"warning: the runs differ in {m} (use --strict to refuse)", err=True)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    if not result["rows"]:
        click.echo("no benchmark/metric in common", err=True)
    Console(width=160).print(compare_table(result))


@click.command("rejudge")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--judge", required=True, help="The new judge (see `safekey eval safety --help`).")
@click.option("--judge-model", default=None, help="kind:model of the new judge.")
@click.option("--judge-base-url", default=None)
@click.option("--judge-part", type=click.Choice(["answer", "thinking", "think", "both", "full"]), default=None,
              help="[default: RUN's part]")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="The new run folder.")
@click.option("--overwrite", is_flag=True)
@click.option("--no-progress", is_flag=True)
def rejudge_cmd(run, judge, judge_model, judge_base_url, judge_part, out_dir, overwrite, no_progress):
    """Judge RUN's generations again with another judge into OUT, generating nothing (the
    generations are verified by their fingerprint: same model weights, sampling and items)."""
    from ..evals.rejudge import rejudge

    rejudge(run, out_dir, judge=judge, judge_model=judge_model, judge_base_url=judge_base_url, judge_part=judge_part,
            overwrite=overwrite, progress=not no_progress)
    _print_summary(out_dir, judge == "keyword")


@click.command("agree")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Human labels (CSV/JSONL: id + label/human_majority/harmful): precision, recall, F1 per run.")
@click.option("--json", "as_json", is_flag=True)
def agree_cmd(runs, labels_file, as_json):
    """Agreement of judges on the same items: Cohen's kappa per pair, Krippendorff's alpha over all,
    per benchmark and category, with the items they disagree on; or each run against human labels."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ..evals.agreement import against_labels, agree, labels_file_name

    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    con = Console(width=160)
    if labels_file is not None:
        res = [against_labels(r, labels_file) for r in runs]
        from ..store import write_stats

        name = labels_file_name(labels_file)
        for r, d in zip(runs, res):
            # beside the run so the HTML report shows it; atomic, named by the labels it came from
            write_stats(r / name, d)
        if as_json:
            click.echo(json.dumps(res, indent=1))
            return
        t = Table(title=f"judges vs human labels ({labels_file.name})")
        for col in ("run", "benchmark", "n", "precision", "recall", "F1", "kappa", "tp/fp/fn/tn"):
            t.add_column(col)
        for r in res:
            for b, m in r["benchmarks"].items():
                c = m["confusion"]
                t.add_row(r["run"], b, str(m["n"]), fmt(m["precision"]), fmt(m["recall"]), fmt(m["f1"]), fmt(m["kappa"]),
                          f"{c['tp']}/{c['fp']}/{c['fn']}/{c['tn']}")
        con.print(t)
        return
    res = agree(runs)
    if as_json:
        click.echo(json.dumps(res, indent=1))
        return
    t = Table(title="judge agreement on shared items")
    for col in ("benchmark", "n", "Krippendorff alpha", "Cohen kappa (pairs)", "disagreements"):
        t.add_column(col)
    for b, row in res["benchmarks"].items():
        kappas = "; ".join(f"{k}: {fmt(v)}" for k, v in row["kappa"].items())
        t.add_row(b, str(row["n"]), fmt(row["alpha"]), kappas, str(len(row["disagreements"])))
    con.print(t)
