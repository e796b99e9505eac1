"""Assemble the self-contained HTML report: tables, embedded plots, side-by-side examples."""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..atomic import write_text_atomic
from ..metrics import fmt_rate
from ..types import SafekeyError
from . import plots
from .collect import Collected, EvalRun, collect

MAX_RESPONSE_CHARS = 1500


def _cell(r: dict[str, Any] | None) -> str:
    return fmt_rate(r) if r else "—"


def safety_tables(evals: list[EvalRun]) -> dict[str, Any]:
    """A pivot (model × benchmark, headline metric) and the long table of every metric."""
    benches: list[str] = []
    for e in evals:
        for b in e.summary["benchmarks"]:
            if b not in benches:
                benches.append(b)
    heads = []
    for b in benches:
        # the first run that judged anything on b names the metric (a run whose every item failed has none)
        metric = next((m for e in evals if b in e.summary["benchmarks"] and (m := plots.headline_metric(e.summary["benchmarks"][b]))),
                      None)
        heads.append({"bench": b, "metric": metric})
    pivot = []
    for e in evals:
        row = {"label": e.label, "cells": []}
        for h in heads:
            m = e.summary["benchmarks"].get(h["bench"], {}).get("metrics", {}).get(h["metric"]) if h["metric"] else None
            row["cells"].append(_cell(m))
        pivot.append(row)
    long = []
    for e in evals:
        for b, v in e.summary["benchmarks"].items():
            for metric, r in v.get("metrics", {}).items():
                long.append({"label": e.label, "bench": b, "metric": metric, "value": _cell(r), "n": r.get("n", 0),
                             "judge_failures": v.get("judge_failures", 0), "generation_failures": v.get("generation_failures", 0)})
    return {"heads": heads, "pivot": pivot, "long": long}


def _segments(resp: str, u_end: int | None, k_end: int | None) -> list[tuple[str, str]]:
    """Response split into (css class, text) pieces with U and K marked when their offsets are known."""
    if u_end is not None and k_end is not None and 0 < u_end < k_end <= len(resp) and resp.startswith("<think>\n"):
        start = len("<think>\n")
        parts = [("", resp[:start]), ("u", resp[start:u_end]), ("k", resp[u_end:k_end]), ("", resp[k_end:])]
    else:
        parts = [("", resp)]
    out, budget = [], MAX_RESPONSE_CHARS
    for cls, text in parts:
        if budget <= 0:
            break
        piece = text[:budget]
        budget -= len(piece)
        if piece:
            out.append((cls, piece))
    if len(resp) > MAX_RESPONSE_CHARS:
        out.append(("cut", f" … [{len(resp) - MAX_RESPONSE_CHARS} more characters]"))
    return out


def _verdict(r: dict[str, Any]) -> tuple[str, str]:
    j = r.get("judge") or {}
    if r.get("unsafe") == 1 and j.get("harmful") is not None:
        return ("bad", "harmful") if j["harmful"] else ("good", "refused / safe")
    if r.get("unsafe") == 0 and j.get("refused") is not None:
        return ("bad", "over-refused") if j["refused"] else ("good", "answered")
    return ("", j.get("label", "—"))


def pick_examples(evals: list[EvalRun], per_bench: int = 2) -> list[dict[str, Any]]:
    """Items every model answered; those where the models' verdicts differ come first."""
    if not evals:
        return []
    out = []
    benches = [b for b in evals[0].items if all(b in e.items for e in evals)]
    for b in benches:
        common = [i for i in evals[0].items[b] if all(i in e.items[b] for e in evals)]

        def disagreement(i: str, b: str = b) -> tuple[int, str]:
            labels = {_verdict(e.items[b][i])[1] for e in evals}
            return (-len(labels), i)

        for i in sorted(common, key=disagreement)[:per_bench]:
            first = evals[0].items[b][i]
            cells = []
            for e in evals:
                r = e.items[b][i]
                cls, text = _verdict(r)
                cells.append({"label": e.label, "verdict_class": cls, "verdict": text,
                              "segments": _segments(r.get("response") or "", r.get("u_end"), r.get("k_end"))})
            q = first.get("question") or " | ".join(m.get("content", "") for m in first.get("messages") or [])
            out.append({"bench": b, "id": i, "question": q, "cells": cells})
    return out


TRAIN_COLUMNS = [("settings", "settings (train_config.yaml)"), ("steps", "steps"), ("epochs", "epochs"), ("loss", "total loss"), ("lm_loss", "language-model loss"),
                 ("qmm_loss", "query-mask loss (on K)"), ("head_loss", "safety-head loss"),
                 ("head_acc_u", "safety-head accuracy at U"), ("qmm_k_acc", "K-token accuracy without the query")]

# plain words for metric keys in table headers (the keys stay in the JSON files)
PLAIN = {"harmful_rate": "harmful compliance", "refusal_rate": "refusal", "compliance_rate": "compliance",
         "mean_harm_score": "mean harm score (1-5)", "strongreject_score": "StrongREJECT score",
         "accuracy": "accuracy", "pass@1": "pass@1", "no_answer_rate": "no answer extracted",
         "harmful_reasoning_rate": "harmful reasoning", "partial_refusal_rate": "partial refusal",
         "harmful_rate_full": "harmful, unclosed thinking judged too"}


def plain(metric: str | None) -> str:
    if not metric:  # a benchmark none of whose items was judged has no headline metric
        return "no judged items"
    return PLAIN.get(metric, metric.replace("_rate", "").replace("_", " "))


def train_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The columns some run has a value in: an SFT-only report shows no QMM / head columns."""
    return [(k, h) for k, h in TRAIN_COLUMNS if k in ("settings", "steps", "epochs") or any(r.get(k) not in (None, "—") for r in rows)]


def train_table(col: Collected) -> list[dict[str, Any]]:
    rows = []
    for t in col.trains:
        last = t.rows[-1] if t.rows else {}

        def last_of(key: str, t=t) -> str:
            vals = [t.value(r, key) for r in t.rows if t.value(r, key) is not None]
            return f"{vals[-1]:.4g}" if vals else "—"

        cfg: dict[str, Any] = {}
        if t.config:
            import yaml

            try:
                cfg = yaml.safe_load(t.config) or {}
            except yaml.YAMLError:
                cfg = {}
        settings = ", ".join(f"{k}={cfg[k]}" for k in ("mode", "seed", "epochs", "lr", "effective_batch", "lora",
                                                       "last_k_epochs") if isinstance(cfg, dict) and k in cfg) or "—"
        rows.append({"label": t.label, "settings": settings, "steps": last.get("step", 0), "epochs": last.get("epoch", 0),
                     "loss": last_of("loss"), "lm_loss": last_of("lm_loss"), "qmm_loss": last_of("qmm_loss"),
                     "head_loss": last_of("head_loss"), "head_acc_u": last_of("head_acc_u"),
                     "qmm_k_acc": last_of("qmm_k_acc")})
    return rows


def analysis_sections(col: Collected) -> list[dict[str, Any]]:
    secs = []
    for a in col.analyses:
        d = a.data
        if a.kind == "analysis-attention":
            rows = []
            for label, m in d["models"].items():
                for part in ("all", "unsafe", "benign"):
                    s = m["summary"][part]
                    if s.get("n"):
                        rows.append([label, part, s["n"], f"{s['u']['mean']:.4f} [{s['u']['ci'][0]:.4f}, {s['u']['ci'][1]:.4f}]",
                                     f"{s['query']['mean']:.4f} [{s['query']['ci'][0]:.4f}, {s['query']['ci'][1]:.4f}]"])
            secs.append({"title": "Attention from the key sentence onto U vs the query",
                         "note": "Share of each K token's attention (eager softmax weights, mean over heads, K tokens and layers) "
                                 "that lands on the understanding U and on the user's query. SafeKey's query-mask modelling "
                                 "should shift K's attention towards U.",
                         "cols": ["model", "items", "n", "K→U", "K→query"], "rows": rows, "img": plots.attention_plot(d),
                         "source": a.path.name})
        elif a.kind == "analysis-probe":
            rows = [[label, m["n"], m["n_unsafe"], f"{m['last_layer']:.3f}", f"{m['best']:.3f} (layer {m['best_layer']})"]
                    for label, m in d["models"].items()]
            secs.append({"title": "Linear probe at the end of U",
                         "note": f"Logistic regression on the hidden state of the last U token, {d.get('folds')}-fold "
                                 "cross-validated AUROC for harmful vs benign (per layer).",
                         "cols": ["model", "n", "unsafe", "AUROC last layer", "AUROC best layer"], "rows": rows,
                         "img": plots.probe_plot(d), "source": a.path.name})
        elif a.kind == "analysis-kl":
            ks = [str(k) for k in d.get("ks", [])]
            rows = [[f"KL({p['a']} ‖ {p['b']})"] + [f"{p['per_k'][k]['mean']:.3f}" if p["per_k"][k]["n"] else "—" for k in ks]
                    for p in d["pairs"]]
            secs.append({"title": "KL after k prefilled tokens",
                         "note": f"KL between next-token distributions, teacher-forced on the `{d.get('field')}` text "
                                 f"of {d.get('records')}, after k of its tokens.",
                         "cols": ["pair"] + [f"k={k}" for k in ks], "rows": rows, "img": plots.kl_plot(d),
                         "source": a.path.name})
        elif a.kind == "analysis-aha":
            rows = [[label, b, m["n"], m["with_uk"], fmt_rate(m["aha_rate"]), fmt_rate(m["harmful_given_aha"]),
                     fmt_rate(m["harmful_given_no_aha"]), ", ".join(f"{k} {v}" for k, v in m["no_uk"].items()) or "—"]
                    for label, r in d["runs"].items() for b, m in r["benchmarks"].items()]
            secs.append({"title": "The safety aha moment in the generations",
                         "note": "Share of generated key sentences K (the sentence after the model's understanding U) that "
                                 "voice a safety concern, and the harmful rate of items with and without that aha moment. "
                                 "SafeKey predicts more aha moments and less harm after them.",
                         "cols": ["model", "benchmark", "n", "with U/K", "aha rate", "harmful | aha", "harmful | no aha",
                                  "no U/K"], "rows": rows, "img": None, "source": a.path.name})
    return secs


def agreement_sections(safety: list[EvalRun]) -> list[dict[str, Any]]:
    """Judge agreement for runs that judged the SAME generations (a run and its `eval rejudge`
    copies: different models' verdicts are not an agreement question), and each run's comparison
    with human labels when `safekey eval agree RUN --labels` left one in the run folder."""
    from itertools import combinations

    from ..metrics import cohen_kappa, judged_flag, krippendorff_alpha

    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    groups: dict[str, list[EvalRun]] = {}
    for e in safety:
        origin = e.summary.get("rejudged_from") or str(e.path.resolve())
        groups.setdefault(str(Path(origin).resolve()), []).append(e)
    out: list[dict[str, Any]] = []
    for runs in groups.values():
        if len(runs) < 2:
            continue
        rows = []
        for bench in [b for b in runs[0].items if all(b in r.items for r in runs)]:
            flags = [{i: f for i, rec in r.items[bench].items() if (f := judged_flag(rec)) is not None} for r in runs]
            ids = sorted(set.intersection(*(set(f) for f in flags)))
            alpha = krippendorff_alpha([[f[i] for f in flags] for i in ids])
            kappas = "; ".join(f"{runs[x].label} ~ {runs[y].label}: "
                               f"{fmt(cohen_kappa([flags[x][i] for i in ids], [flags[y][i] for i in ids]))}"
                               for x, y in combinations(range(len(runs)), 2))
            dis = sum(1 for i in ids if len({f[i] for f in flags}) > 1)
            rows.append([bench, str(len(ids)), fmt(alpha), kappas, str(dis)])
        out.append({"title": "Judge agreement on the same generations (" + ", ".join(r.label for r in runs) + ")",
                    "cols": ["benchmark", "n", "Krippendorff α", "Cohen κ", "disagreements"], "rows": rows})
    for f, e in [(f, run) for run in safety for f in sorted(run.path.glob("labels_agreement*.json"))]:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SafekeyError(f"{f}: unreadable ({type(err).__name__}); rerun `safekey eval agree --labels`") from None
        rows = [[b, str(m["n"]), fmt(m["precision"]), fmt(m["recall"]), fmt(m["f1"]), fmt(m["kappa"])]
                for b, m in d["benchmarks"].items()]
        out.append({"title": f"{e.label} vs human labels ({Path(d['labels']).name})",
                    "cols": ["benchmark", "n", "precision", "recall", "F1", "κ"], "rows": rows})
    return out


def resolve_baseline(paths: list[str | Path], safety: list[EvalRun], given: str | None) -> str | None:
    """The row every Δ is against: --baseline, else the experiment's `report.baseline` (when that
    label is a row), else the first run."""
    if given:
        return given
    from . import seeds

    manifest = seeds.find_manifest(paths)
    if manifest is not None:
        b = json.loads(manifest.read_text(encoding="utf-8")).get("baseline")
        if b and any(e.label == b for e in safety):
            return b
    return safety[0].label if safety else None


def _paper(safety: list[EvalRun], mismatches: list[str], baseline: str | None) -> dict[str, Any] | None:
    """The paper table with the first run as the baseline, and what its deltas show."""
    from .paper_table import html_cells, paper_table, what_this_shows

    if len(safety) < 1:
        return None
    base = baseline if len(safety) > 1 else None
    t = paper_table(safety, baseline=base)
    return {"cols": t["cols"], "rows": html_cells(t), "footer": t["footer"] + [f"NOT COMPARABLE: {m}" for m in mismatches],
            "shows": what_this_shows(t), "baseline": base}


def _seeds(paths: list[str | Path], evals: list[EvalRun]) -> dict[str, Any] | None:
    """The variants × seeds table when a folder is a `safekey run` experiment with several seeds
    (safety and reasoning evals of one model are one row)."""
    from . import seeds

    manifest = seeds.find_manifest(paths)
    if manifest is None or len(json.loads(manifest.read_text(encoding="utf-8")).get("seeds") or []) < 2:
        return None
    study = seeds.seed_study(manifest, evals)
    if study is None:
        return None
    head, rows = seeds.table_cells(study)
    return {"head": head, "rows": rows, "shows": seeds.what_this_shows(study), "img": plots.to_data_uri(seeds.figure(study))}


def sampling_text(sampling: Any) -> str:
    """``temperature=0.0, top_p=1.0, max_new_tokens=96`` (a dict printed as a dict read as code)."""
    if not isinstance(sampling, dict):
        return "—" if sampling is None else str(sampling)
    return ", ".join(f"{k}={v}" for k, v in sampling.items() if v is not None)


class PathScrub:
    """Paths as the reader needs them: relative to the reported folder, ``$SAFEKEY_HOME/…`` or
    ``~/…`` — never the absolute layout of the machine that built the report."""

    def __init__(self, roots: list[Path]):
        from ..paths import home

        self.subs = sorted({(str(r.resolve()), r.name or ".") for r in roots if r.exists()}, key=lambda t: -len(t[0]))
        self.subs += [(str(home()), "$SAFEKEY_HOME"), (str(Path.home()), "~")]

    def __call__(self, text: Any) -> str:
        t = "" if text is None else str(text)
        for prefix, name in self.subs:
            t = t.replace(prefix, name)
        return t


def _run_settings(e: EvalRun) -> str:
    """Seed and weights fingerprint of an evaluated model folder (train_config.yaml beside it)."""
    w = e.summary.get("weights")
    fp = w.rsplit("@", 1)[1][:12] if isinstance(w, str) and "@" in w else "—"
    folder = Path(w.rsplit("@", 1)[0]) if isinstance(w, str) and "@" in w else None
    bits = [f"weights {fp}"]
    cfg = folder / "train_config.yaml" if folder else None
    if cfg is not None and cfg.is_file():
        import yaml

        c = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
        bits += [f"{k}={c[k]}" for k in ("mode", "seed", "epochs", "lr", "lora", "effective_batch", "last_k_epochs") if k in c]
    return ", ".join(bits)


def build_report(paths: list[str | Path], out: str | Path, *, title: str = "safekey report",
                 intro: str | None = None, examples_per_bench: int = 2, mismatches: list[str] | None = None,
                 baseline: str | None = None) -> Path:
    """Collect runs under `paths` and write one self-contained HTML file to `out`."""
    col = collect(paths)
    if col.empty():
        raise SafekeyError(f"nothing to report under {', '.join(map(str, paths))}: no summary.json, "
                           "train_log.jsonl or analysis JSON found")
    safety = [e for e in col.evals if e.kind == "safety"]
    other = [e for e in col.evals if e.kind != "safety"]
    trains = train_table(col)
    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent)), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(
        title=title,
        intro=intro,
        created=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        sources=[Path(p).name for p in paths],
        scrub=PathScrub([Path(p) for p in paths]),
        sampling_text=sampling_text,
        run_settings=_run_settings,
        evals=col.evals,
        safety=safety_tables(safety) if safety else None,
        proxy=any(e.summary.get("judge") == "keyword" for e in safety),
        reasoning=safety_tables(other) if other else None,
        safety_img=plots.safety_bars(safety) if safety else None,
        category_img=plots.category_bars(safety) if safety else None,
        trains=trains,
        train_cols=train_columns(trains),
        plain=plain,
        train_img=plots.training_curves(col.trains),
        analyses=analysis_sections(col),
        agreement=agreement_sections(safety),
        paper=_paper(safety, mismatches or [], resolve_baseline(paths, safety, baseline)),
        seeds=_seeds(paths, col.evals),
        examples=pick_examples(safety, examples_per_bench),
        esc=html.escape,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, page)
    return out
