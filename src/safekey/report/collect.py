"""Find what a report can show under the given paths: eval runs, training runs, analysis files.

Why discovery instead of flags per kind: `safekey report runs/demo` should just work on a folder
tree written by any mix of stages; every stage's output has a recognisable signature
(``summary.json`` with ``kind``, ``train_log.jsonl``, ``{"kind": "analysis-…"}``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import iter_json_objects
from ..types import SafekeyError

SKIP_DIRS = {"checkpoint", ".git", "__pycache__"}
# model folders carry large JSON files that are never analyses
SKIP_JSON = {"tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json",
             "special_tokens_map.json", "vocab.json", "adapter_config.json", "run.json"}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Objects of a JSONL file; unparseable lines are counted by the caller's stage, not here."""
    if not path.exists():
        return []
    return [obj for _, obj, err in iter_json_objects(path) if err is None and isinstance(obj, dict)]


@dataclass
class EvalRun:
    path: Path
    label: str
    summary: dict[str, Any]
    # bench -> id -> judged record (with u_end/k_end merged in when an annotated copy exists)
    items: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.summary.get("kind", "safety")


EXTRA_KEYS = ("qmm_loss", "head_loss", "head_acc_u", "head_acc_pre_k", "qmm_k_acc")


@dataclass
class TrainRun:
    path: Path
    label: str
    rows: list[dict[str, Any]]
    config: str | None = None

    def value(self, row: dict[str, Any], key: str) -> Any:
        """A logged value, or None where that loss was not part of the objective: the trainer logs
        the QMM / head terms as 0 while they are off (SFT, and SafeKey before its last epochs)."""
        if key in EXTRA_KEYS and row.get("extras_active") is False:
            return None
        return row.get(key)


@dataclass
class Analysis:
    path: Path
    kind: str
    data: dict[str, Any]


@dataclass
class Collected:
    evals: list[EvalRun] = field(default_factory=list)
    trains: list[TrainRun] = field(default_factory=list)
    analyses: list[Analysis] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.evals or self.trains or self.analyses)


def _label(path: Path, taken: set[str], prefix: str = "") -> str:
    """The folder name without its kind prefix (``eval-base`` → ``base``), with the parent prepended
    when two runs of the same kind share a name."""
    label = path.name[len(prefix):] if prefix and path.name.startswith(prefix) and len(path.name) > len(prefix) else path.name
    for extra in path.parents:
        if label not in taken:
            break
        label = f"{extra.name}/{label}"
    taken.add(label)
    return label


def _bad(where: Path, at: str, what: str) -> SafekeyError:
    return SafekeyError(f"{where}: {at}: {what} (not a summary safekey wrote; rerun the eval or fix the file)")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_share(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_rate(r: dict[str, Any], where: Path, at: str) -> None:
    """A stored rate ``{"rate", "ci": [lo, hi], "n"}``: numbers, finite, n a count; n = 0 may carry no rate."""
    if not _is_count(r.get("n", 0)):
        raise _bad(where, f"{at}.n", f"{r.get('n')!r} is not a count")
    if r.get("n", 0) == 0 and r.get("rate") is None:
        return
    if not _is_share(r.get("rate")):
        raise _bad(where, f"{at}.rate", f"{r.get('rate')!r} is not a finite number")
    ci = r.get("ci")
    if not (isinstance(ci, list) and len(ci) == 2 and all(_is_share(x) for x in ci)):
        raise _bad(where, f"{at}.ci", f"{ci!r} is not [low, high]")


def _walk_rates(obj: Any, where: Path, at: str) -> None:
    if isinstance(obj, dict):
        if "rate" in obj or ("ci" in obj and "n" in obj):
            _check_rate(obj, where, at)
            return
        for k, v in obj.items():
            _walk_rates(v, where, f"{at}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk_rates(v, where, f"{at}[{i}]")


def check_summary(summary: dict[str, Any], where: Path) -> None:
    """summary.json as safekey writes it, checked before anything is drawn from it: a hand-edited or
    foreign file (numbers as strings, ``ci: null``, NaN, a negative n) is one line naming the field,
    never a traceback or a NaN printed as a number."""
    for key in ("label", "model", "judge"):
        if summary.get(key) is not None and not isinstance(summary[key], str):
            raise _bad(where, key, f"{summary[key]!r} is not a string")
    if summary.get("sampling") is not None and not isinstance(summary["sampling"], dict):
        raise _bad(where, "sampling", f"{summary['sampling']!r} is not an object")
    for name, b in summary["benchmarks"].items():
        at = f"benchmarks.{name}"
        if not isinstance(b, dict):
            raise _bad(where, at, "not an object")
        if not _is_count(b.get("n")):
            raise _bad(where, f"{at}.n", f"{b.get('n')!r} is not a count")
        if not isinstance(b.get("metrics"), dict):
            raise _bad(where, f"{at}.metrics", "not an object")
        for k in ("judge_failures", "generation_failures", "samples", "n_items"):
            if k in b and not _is_count(b[k]):
                raise _bad(where, f"{at}.{k}", f"{b[k]!r} is not a count")
        _walk_rates(b, where, at)


def _load_eval(d: Path, label: str) -> EvalRun:
    try:
        summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SafekeyError(f"{d / 'summary.json'}: not valid JSON ({e.msg})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("benchmarks"), dict):
        raise SafekeyError(f"{d / 'summary.json'}: no 'benchmarks' object; is this an eval run?")
    check_summary(summary, d / "summary.json")
    refuse_stale_weights(d, summary)
    run = EvalRun(d, summary.get("label") or label, summary)
    from ..paths import safe_name

    for bench in summary["benchmarks"]:
        safe_name(bench, what=f"{d / 'summary.json'}: benchmark")
        scored = "graded.jsonl" if run.kind == "reasoning" else "judged.jsonl"
        items = {str(r["id"]): r for r in read_jsonl(d / bench / scored) if "id" in r}
        for r in read_jsonl(d / bench / "judged.uk.jsonl"):
            rid = str(r.get("id"))
            if rid in items and r.get("u_end") is not None and r.get("response") == items[rid].get("response"):
                items[rid] = {**items[rid], "u_end": r["u_end"], "k_end": r["k_end"]}
        run.items[bench] = items
    return run


def refuse_stale_weights(d: Path, summary: dict[str, Any]) -> None:
    """An evaluation is shown only for the weights it measured: when its model folder has been
    retrained since (the folder's weight fingerprint differs from the one the summary recorded),
    the numbers belong to a model that no longer exists under that name."""
    from ..llm.core import local_model_id

    w = summary.get("weights")
    if not isinstance(w, str) or "@" not in w:
        return  # a hub / endpoint model: identified by its name only
    folder = Path(w.rsplit("@", 1)[0])
    if folder.is_dir() and local_model_id(folder) != w:
        raise SafekeyError(f"{d}: evaluated other weights than {folder} now holds (retrained since?); rerun the eval "
                           f"(safekey run reruns it) before reporting it")


def comparability_problems(evals: list[EvalRun]) -> list[str]:
    """Why rows of one table would not compare models: runs of a kind that differ in judge, judged
    part or sampling, or that evaluated other items of a benchmark (another --limit sample)."""
    from ..metrics import COMPARABLE_SETTINGS

    out = []
    for kind, keys in COMPARABLE_SETTINGS.items():
        runs = [e for e in evals if e.kind == kind]
        for key in keys:
            seen: dict[str, list[str]] = {}
            for e in runs:
                seen.setdefault(json.dumps(e.summary.get(key), sort_keys=True, default=str), []).append(e.label)
            if len(seen) > 1:
                out.append(f"{kind} runs differ in {key}: " + "; ".join(f"{', '.join(labels)} = {v[:80]}"
                                                                         for v, labels in seen.items()))
        benches = {b for e in runs for b in e.summary["benchmarks"]}
        for b in sorted(benches):
            ids = {}
            for e in runs:
                if b in e.summary["benchmarks"]:
                    sample = (e.summary["benchmarks"][b].get("sample") or {}).get("ids")
                    ids.setdefault(json.dumps(sorted(sample)) if sample else "all", []).append(e.label)
            if len(ids) > 1:
                out.append(f"{kind} runs evaluated different items of {b}: "
                           + "; ".join(f"{', '.join(labels)}" for labels in ids.values()))
    return out


def _analysis_kind(p: Path) -> dict[str, Any] | None:
    if p.stat().st_size > 50_000_000:
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and str(data.get("kind", "")).startswith("analysis-"):
        return data
    return None


def collect(paths: list[str | Path]) -> Collected:
    """Walk every path (a run folder, a parent of run folders, or an analysis JSON file)."""
    out = Collected()
    taken: set[str] = set()
    taken_train: set[str] = set()
    seen: set[Path] = set()
    for root in map(Path, paths):
        if not root.exists():
            raise SafekeyError(f"{root}: no such file or folder")
        if root.is_file():
            data = _analysis_kind(root) if root.suffix == ".json" else None
            if data is None:
                raise SafekeyError(f"{root}: not an analysis JSON (give a run folder or a safekey analyze output)")
            out.analyses.append(Analysis(root, data["kind"], data))
            continue
        dirs = [root] + sorted(p for p in root.rglob("*") if p.is_dir() and not (set(p.relative_to(root).parts) & SKIP_DIRS)
                               and not any(part.startswith("checkpoint-") for part in p.relative_to(root).parts))
        for d in dirs:
            d = d.resolve()
            if d in seen:
                continue
            seen.add(d)
            if (d / "summary.json").exists():
                out.evals.append(_load_eval(d, _label(d, taken, "eval-")))
            if (d / "train_log.jsonl").exists():
                cfg = d / "train_config.yaml"
                out.trains.append(TrainRun(d, _label(d, taken_train, "train-"), read_jsonl(d / "train_log.jsonl"),
                                           cfg.read_text(encoding="utf-8") if cfg.exists() else None))
            for p in sorted(d.glob("*.json")):
                if p.name == "summary.json" or p.name in SKIP_JSON or p.name.endswith(".stats.json"):
                    continue
                data = _analysis_kind(p)
                if data is not None:
                    out.analyses.append(Analysis(p, data["kind"], data))
    by_label: dict[tuple[str, str], Path] = {}
    for e in out.evals:  # two rows named `base` cannot both be read as "the base model"
        if (e.kind, e.label) in by_label:
            raise SafekeyError(f"two runs are labelled {e.label!r}: {by_label[(e.kind, e.label)]} and {e.path}; "
                               "give one another --label (eval safety / reasoning) or report them apart")
        by_label[(e.kind, e.label)] = e.path
    # the order runs were made in (base → sft → safekey in the demo), not the alphabet
    out.evals.sort(key=lambda e: (str(e.summary.get("created", "")), e.label))
    out.trains.sort(key=lambda t: ((t.path / "train_log.jsonl").stat().st_mtime, t.label))
    return out
