"""`safekey train …`: run (SFT / SafeKey fine-tuning), inspect (one rendered example), check-spans."""

from __future__ import annotations

import click

from ..types import SafekeyError


def _cfg(config, overrides, **values):
    from ..config import load_config
    from ..train.config import TrainConfig

    return load_config(TrainConfig, config, overrides, **values)


def _tok(model, trust_remote_code: bool = False):
    from ..models import load_tokenizer

    return load_tokenizer(model, trust_remote_code=trust_remote_code)


@click.group()
def train() -> None:
    """Fine-tune a model in one of four modes: sft (STAR-1), safekey (SFT + safety head + query-mask),
    dpo (intervened preference pairs, IPO) or grpo (RL with safety rewards, RECAP prefills)."""


@train.command()
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="Hub id, local folder or alias (default smollm2-135m).")
@click.option("--mode", type=click.Choice(["sft", "safekey", "dpo", "grpo"]), default=None,
              help="sft = STAR-1; safekey = SFT + DPSH + QMM; dpo = preference pairs (IPO: sigmoid DPO + 0.2 SFT from the "
                   "divergence point; RECORDS are {id, question, prefix, chosen, rejected}); grpo = RL with safety, "
                   "over-refusal and format rewards (RECORDS are prompts: {id, question, unsafe}).")
@click.option("-o", "--out", "out", default=None, type=click.Path(file_okay=False), help="Output folder (required).")
@click.option("--print-config", is_flag=True, help="Print the resolved training settings (every field, defaults filled "
              "in) as YAML and exit without training.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="YAML config (configs/train/*.yaml).")
@click.option("--set", "overrides", multiple=True, help="key=value override (repeatable), e.g. --set lr=2e-5.")
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--lora", is_flag=True, default=None, help="Train LoRA adapters; the saved model is merged.")
@click.option("--max-length", type=click.IntRange(16), default=None)
@click.option("--no-head", is_flag=True, help="Ablation: no Dual-Path Safety Head.")
@click.option("--no-qmm", is_flag=True, help="Ablation: no Query-Mask Modeling.")
@click.option("--qmm-unmasked", is_flag=True, help="Ablation: the QMM pass sees the query.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT.")
@click.option("--auto-resume", is_flag=True, help="Continue an interrupted run of the same config from its last complete "
              "checkpoint; do nothing when OUT holds the finished run; start when OUT is empty (what `safekey run` uses).")
@click.option("--overwrite", is_flag=True, help="Start OUT afresh when it holds a training run (its files are removed).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed input lines (kept in OUT/train.rejects.jsonl).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N records.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model folder's own code (auto_map). Off by default.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs and pipelines).")
def run(records, model, mode, out, print_config, config, overrides, epochs, lora, max_length, no_head, no_qmm, qmm_unmasked,
        resume, auto_resume, overwrite, skip_bad, limit, trust_remote_code, no_progress):
    """Fine-tune MODEL on RECORDS; writes OUT/ (model, tokenizer, train_log.jsonl, train_config.yaml)."""
    from pathlib import Path

    from ..paths import refuse_output_in_inputs
    from ..train.run import train as do_train

    if out is None and not print_config:
        raise click.UsageError("Missing option '-o' / '--out'.")
    if out is not None:
        refuse_output_in_inputs(out, [records])  # --overwrite clears the folder: the data must live elsewhere
        if Path(out).exists() and not Path(out).is_dir():
            raise SafekeyError(f"-o {out} is a file; training writes a folder")

    cfg = _cfg(
        config,
        overrides,
        model=model,
        mode=mode,
        epochs=epochs,
        lora=True if lora else None,
        max_length=max_length,
        head=False if no_head else None,
        qmm=False if no_qmm else None,
        qmm_unmasked=True if qmm_unmasked else None,
        limit=limit,
        trust_remote_code=True if trust_remote_code else None,
    )
    if print_config:
        import yaml

        from ..redact import redact_obj

        click.echo(yaml.safe_dump(redact_obj(cfg.model_dump(mode="json")), sort_keys=False, allow_unicode=True), nl=False)
        return
    stats = do_train(cfg, records, out, resume=resume, overwrite=overwrite, skip_bad=skip_bad, auto_resume=auto_resume,
                     progress=not no_progress)
    if stats.get("already_finished"):
        click.echo(f"already trained with this config: {out} (use --overwrite to train again)")
        return
    click.echo(
        f"trained {stats['examples']} examples ({stats['records']} records, dropped {stats['dropped'] or 0}), "
        f"{stats['global_step']} steps, final loss {stats['train_loss']:.4f} → {out}"
    )


ROLE_STYLE = {"template": "dim", "query": "cyan", "rest": "white", "U": "bold yellow", "K": "bold red"}


@train.command()
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("--model", default="smollm2-135m", show_default=True)
@click.option("--index", "index", type=click.IntRange(0), default=0, show_default=True, help="Record position in the file.")
@click.option("--config", type=click.Path(dir_okay=False), default=None)
@click.option("--set", "overrides", multiple=True)
@click.option("--trust-remote-code", is_flag=True, help="Allow a model folder's own code (auto_map). Off by default.")
def inspect(records, model, index, config, overrides, trust_remote_code):
    """Print one rendered example, every token marked by role and loss (rich colours + plain legend)."""
    from rich.console import Console
    from rich.text import Text

    from ..train.data import load_records
    from ..train.render import template_drops_thinking
    from ..train.spans import ROLE_NAMES, encode_record

    cfg = _cfg(config, overrides, model=model)
    recs = load_records(records, index + 1)
    if index >= len(recs):
        raise SafekeyError(f"{records}: no record at index {index} ({len(recs)} records)")
    rec = recs[index]
    tok = _tok(cfg.model, trust_remote_code)
    has_spans = rec.u_end is not None and rec.k_end is not None and cfg.think_flag == 1
    e = encode_record(tok, rec, needs_spans=has_spans, max_length=None, think_flag=cfg.think_flag,
                      base_flag=cfg.base_flag, default_unsafe=cfg.default_unsafe if cfg.default_unsafe is not None else 1)
    con = Console(highlight=False)
    con.print(f"record {rec.id}: {len(e.input_ids)} tokens, {sum(l != -100 for l in e.labels)} loss-bearing; "
              f"U tokens {e.u_span}, K tokens {e.k_span}; template drops thinking: {template_drops_thinking(tok)}")
    con.print("legend: [dim]template[/] [cyan]query[/] [bold yellow]U[/] [bold red]K[/] rest | "
              "[underline]underlined[/] = loss-bearing; plain: ‹role|+/- token› where + = loss, - = masked")
    t = Text()
    for tid, lab, role in zip(e.input_ids, e.labels, e.roles):
        piece = tok.decode([tid])
        name = ROLE_NAMES[role]
        t.append(piece, style=ROLE_STYLE[name] + (" underline" if lab != -100 else ""))
    con.print(t)
    con.print("\nplain:")
    plain = []
    for tid, lab, role in zip(e.input_ids, e.labels, e.roles):
        plain.append(f"‹{ROLE_NAMES[role]}|{'+' if lab != -100 else '-'}{tok.decode([tid])!r}›")
    click.echo(" ".join(plain))


@train.command("check-spans")
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("--model", default="smollm2-135m", show_default=True, help="Model (or tokenizer) folder / alias.")
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option("--trust-remote-code", is_flag=True, help="Allow a model folder's own code (auto_map). Off by default.")
def check_spans_cmd(records, model, limit, trust_remote_code):
    """Check that every record's K token span decodes to its K text; list misaligned ids."""
    from ..store import require_unique_ids
    from ..train.data import load_records
    from ..train.spans import check_spans

    recs = load_records(records, limit)
    require_unique_ids(recs, records)
    tok = _tok(model, trust_remote_code)
    good, bad = check_spans(tok, recs)
    for rid, dec, exp in bad:
        click.echo(f"misaligned {rid}: tokens {dec!r} vs K {exp!r}")
    click.echo(f"spans aligned: {good}/{len(recs)}")
    if bad:
        raise SystemExit(1)
