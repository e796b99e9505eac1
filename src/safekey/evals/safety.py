"""The safety evaluation family: solve → judge → aggregate, resumable at every step.

Layout of a run folder::

    RUN/run.json                      creation time + resolved config (``created`` survives resumes)
    RUN/<bench>/generations.jsonl     one record per item: prompt fields + ``generation`` + ``response``
    RUN/<bench>/judged.jsonl          + ``judge`` (the Verdict) + ``metrics`` (per-item metric values)
    RUN/summary.json                  rates with 95% CIs (Wilson for shares) per benchmark and per category

Both JSONL files are written by :func:`safekey.store.run_stage`, so a killed run resumes where it
stopped, failed items (generation errors, judge failures) are retried on the next run, and the
summary of a resumed run equals that of an uninterrupted one.

The family on the one eval runner (:mod:`.runner`): each benchmark is a task whose solver answers
(:mod:`.solvers`) and whose scorer is the judge (:mod:`.judge_scoring`, which lists the metrics).

Judge failures and generation failures are counted apart and never enter a rate; past
``max_judge_failures`` / ``max_generation_failures`` (shares of a benchmark's items) the run
raises :class:`EvalFailed` after writing its summary, so a run whose judge failed everywhere does
not end in exit 0 with empty metrics.

Truncation: every generation records whether its thinking never closed (``think_not_closed``,
from the rendered prompt + output + finish reason) and whether it stopped at ``max_tokens``; each
benchmark's summary reports both shares. With ``judge_part: answer`` an open thought is never
judged as the answer: the item is written with ``judge.skipped = "think_not_closed"``, enters no
rate, and is counted in ``unjudged``.

``limit`` is a seeded sample stratified by category (:mod:`safekey.subsample`), not the first N
rows; the seed and the chosen ids are in the summary.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..judges import Judge, make_judge
from ..metrics import fmt_rate, md_cell
from ..provenance import provenance
from ..store import write_stats
from ..subsample import stratified_sample
from ..types import Record, SafekeyError
from .judge_scoring import METRIC_ORDER, SCORE_METRICS, JudgeScorer
from .runner import EvalFailed, EvalRunner, Task, check_failure_budget, expand_samples, sample_seed
from .safety_benchmarks import (
    PREFILL_TOKENS_DEFAULT,
    BenchOptions,
    WhitespaceCounter,
    bench_file_name,
    get_benchmark,
    load_bench_file,
    token_counter_for,
)
from .solvers import Solver, Target, make_solver


class SafetyEvalConfig(BaseModel):
    """Everything that defines a safety run; generation and judging parts are fingerprinted apart."""

    model_config = ConfigDict(extra="forbid")

    model: str  # kind:model (hf:smollm2-135m, openai:NAME, vllm:PATH)
    base_url: str | None = None  # for openai-compatible evaluated models
    benches: list[str] = []
    bench_files: list[str] = []
    bench_paths: dict[str, str] = {}  # NAME -> local file overriding the registry's source
    # the solver slot: how each item becomes the model's response (none = the prompt as written);
    # every attack runs on every benchmark (or those attack_benches names), one summary row per
    # (benchmark, attack); `limit` may name a task, BENCH@ATTACK: N of that benchmark's items
    attacks: list[str] = ["none"]
    attack_settings: dict[str, dict[str, Any]] = {}  # per attack: its solver's settings
    attack_benches: dict[str, list[str]] = {}  # per attack: the benchmarks it runs on (default: all)
    judge: str = "keyword"
    judge_model: str | None = None
    judge_base_url: str | None = None
    # answer: after </think>; thinking (= think): the reasoning; both: two verdicts per item, the
    # answer's and the reasoning's, with their 2×2 table; full: everything
    judge_part: Literal["answer", "think", "thinking", "both", "full"] = "answer"
    judge_ensemble: Literal["majority", "any", "all"] = "majority"  # how --judge a,b combines its members
    judge_max_tokens: int | None = None
    # generation (reference: greedy, 8,000 new tokens, repetition penalty 1.2)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(8000, ge=1)
    repetition_penalty: float = Field(1.2, gt=0.0)
    seed: int | None = None
    # sampled safety: K generations per item (temperature > 0) → Safe@1, Safe@K (all K safe),
    # ConsSafe@K (a majority safe); 1 = greedy, one answer per item
    # ConsSafe@K for even K: a tie (K/2 safe) counts unsafe ("strictly more than half") or safe ("at least half")
    conssafe_ties: Literal["unsafe", "safe"] = "unsafe"
    samples: int = Field(1, ge=1, le=1024)  # Safe@K papers use K ≤ 16; each sample is a record in memory
    limit: int | dict[str, int] | None = None  # N per benchmark, or {bench: N, bench@attack: N}
    limit_seed: int = 0  # the stratified --limit sample
    label: str | None = None  # how reports name this model (default: the run folder)
    max_judge_failures: float = Field(0.1, ge=0.0, le=1.0)  # share of a benchmark's items; above: EvalFailed
    max_generation_failures: float = Field(0.1, ge=0.0, le=1.0)
    prefill_tokens: int = Field(PREFILL_TOKENS_DEFAULT, ge=0)
    prefill_prefix: str = ""
    batch_size: int = Field(8, ge=1)
    judge_batch_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SafetyEvalConfig:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 with temperature 0 gives identical samples; set temperature > 0")
        names = self.bench_names()
        for attack, on in self.attack_benches.items():  # a typo would silently run the attack everywhere
            if attack not in self.attacks:
                raise ValueError(f"attack_benches names {attack!r}, not an attack of this run ({', '.join(self.attacks)})")
            if not on or any(b.lower() not in names for b in on):
                raise ValueError(f"attack_benches.{attack}: {on} must name benchmarks of this run ({', '.join(names)})")
        return self

    def bench_names(self) -> list[str]:
        """The run-folder names of the benchmarks, lower-cased, in order."""
        return [b.lower() for b in self.benches] + [bench_file_name(f).lower() for f in self.bench_files]

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, v: list[str]) -> list[str]:
        from .solvers import registry

        names = [a.strip() for a in v if a.strip()]
        unknown = [a for a in names if a not in registry.SOLVERS]
        if unknown:
            raise ValueError(f"unknown attack {unknown[0]!r}; use one of {', '.join(registry.SOLVERS)}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"attacks must be a non-empty list without repeats: {v}")
        return names

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, v: Any) -> Any:
        vals = v.values() if isinstance(v, dict) else [] if v is None else [v]
        if any(int(x) < 1 for x in vals):
            raise ValueError("limit must be a positive N or {bench: N} with positive N")
        return v

    def sampling_dict(self) -> dict[str, Any]:
        d = {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
             "repetition_penalty": self.repetition_penalty, "seed": self.seed}
        return {**d, "samples": self.samples} if self.samples > 1 else d  # greedy runs keep their recorded shape

    def sampling(self) -> Any:
        from ..llm import Sampling

        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_new_tokens,
                        repetition_penalty=self.repetition_penalty, seed=self.seed)


# ---------------------------------------------------------------------------------------------
# the run: tasks on the eval runner


SAME_RUN_KEYS = ("model", "weights", "judge_fingerprint", "judge_part", "sampling")


def limit_sample(recs: list[Record], limit: int | None, seed: int = 0) -> list[Record]:
    """``--limit``: a seeded sample stratified by benchmark category (all items when None)."""
    return stratified_sample(recs, limit, seed=seed, key=lambda r: "|".join(getattr(r, "bench_category", None) or []))


class SafetyRun:
    """One invocation: benchmarks × (solve, judge) into a run folder, then the summary."""

    def __init__(self, cfg: SafetyEvalConfig, out: str | Path, *, overwrite: bool = False, rejudge: bool = False,
                 backend: Any = None, judge: Judge | None = None, progress: bool = True):
        if not cfg.benches and not cfg.bench_files:
            raise SafekeyError("no benchmark given: use --bench NAME[,NAME…] and/or --bench-file PATH")
        self.cfg = cfg
        self.out = Path(out)
        self.overwrite = overwrite
        self.runner = EvalRunner(out, generation_stage="safety-generate", overwrite=overwrite, rescore=rejudge,
                                 progress=progress, stage_failure_share=None)  # the eval's own budget, after the summary
        self._backend = backend
        self._own_backend = backend is None  # close only what we opened
        self._own_judge = judge is None
        names = cfg.bench_names()
        if isinstance(cfg.limit, dict):  # `--limit nosuch=2` silently evaluated everything in full
            tasks = names + [f"{b}@{a}" for b in names for a in cfg.attacks if a != "none" and self._attacks(b, a)]
            unknown = [k for k in cfg.limit if k.lower() not in tasks]
            if unknown:
                raise SafekeyError(f"--limit names {unknown[0]!r}, not a benchmark or task of this run ({', '.join(tasks)})")
        self.judge = judge or make_judge(cfg.judge, judge_model=cfg.judge_model, base_url=cfg.judge_base_url,
                                         max_tokens=cfg.judge_max_tokens, ensemble_rule=cfg.judge_ensemble)
        unused = set(cfg.attack_settings) - set(cfg.attacks)
        if unused:
            raise SafekeyError(f"attack_settings names {sorted(unused)[0]!r}, not an attack of this run ({', '.join(cfg.attacks)})")
        self.solvers: dict[str, Solver] = {a: make_solver(a, **cfg.attack_settings.get(a, {})) for a in cfg.attacks}

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from ..llm import get_backend

            self._backend = get_backend(self.cfg.model, base_url=self.cfg.base_url, batch_size=self.cfg.batch_size)
        return self._backend

    # -- the dataset ------------------------------------------------------------------------------
    def benchmarks(self) -> list[tuple[str, list[Record], dict[str, Any]]]:
        """(name, items, identity) per benchmark; identity goes into the generation fingerprint."""
        out = []
        counter = token_counter_for(self.cfg.model) if "prefilling" in self.cfg.benches else WhitespaceCounter()
        opts = BenchOptions(prefill_tokens=self.cfg.prefill_tokens, prefill_prefix=self.cfg.prefill_prefix, counter=counter)
        for name in self.cfg.benches:
            b = get_benchmark(name)
            src = b.source_for(self.cfg.bench_paths.get(name))
            ident: dict[str, Any] = {"bench": name, "source": src}
            if name == "prefilling":
                ident.update(prefill_tokens=opts.prefill_tokens, prefill_prefix=opts.prefill_prefix, token_counter=counter.name)
            out.append((name, limit_sample(b.load(src, options=opts), self._limit(name), self.cfg.limit_seed), ident))
        for f in self.cfg.bench_files:
            name = bench_file_name(f)
            if any(n == name for n, _, _ in out):
                raise SafekeyError(f"two benchmarks would share the run folder {name!r}; rename {f}")
            out.append((name, limit_sample(load_bench_file(f), self._limit(name), self.cfg.limit_seed),
                        {"bench": name, "source": str(Path(f).resolve())}))
        return out

    def _attacks(self, bench: str, attack: str) -> bool:
        on = self.cfg.attack_benches.get(attack)
        return on is None or bench.lower() in {b.lower() for b in on}

    def _limit(self, name: str) -> int | None:
        lim = self.cfg.limit
        return {k.lower(): v for k, v in lim.items()}.get(name.lower()) if isinstance(lim, dict) else lim

    def tasks(self, model_id: str, benches: list[tuple[str, list[Record], dict[str, Any]]]) -> list[Task]:
        """One task per (benchmark, attack): its items, the attack's solver, the judge scorer. The
        plain task keeps the benchmark's name; an attack's is ``BENCH@ATTACK``."""
        scorer = JudgeScorer(self.judge, self.cfg.judge_part, self.cfg.judge_batch_size, self.cfg.conssafe_ties)
        out = []
        for name, items, ident in benches:
            gen_cfg = {"model": self.cfg.model, "weights": model_id, "sampling": self.cfg.sampling_dict(), **ident}
            extra: dict[str, Any] = ({"sample": {"limit": self._limit(name), "seed": self.cfg.limit_seed,
                                                 "ids": [r.id for r in items]}} if self._limit(name) is not None else {})
            units = expand_samples(items, self.cfg.samples) if self.cfg.samples > 1 else items
            for attack, solver in self.solvers.items():
                if not self._attacks(name, attack):
                    continue
                if attack == "none":
                    out.append(Task(name, units, gen_cfg, solver, scorer, self.cfg.batch_size, extra))
                    continue
                task, sub, sample = f"{name}@{attack}", units, extra
                n = self._limit(task)
                if n is not None:  # a costly attack on a stratified part of the benchmark's own sample
                    part = limit_sample(items, n, self.cfg.limit_seed)
                    sub = expand_samples(part, self.cfg.samples) if self.cfg.samples > 1 else part
                    sample = {"sample": {"limit": n, "seed": self.cfg.limit_seed, "ids": [r.id for r in part],
                                         "of": self._limit(name)}}
                out.append(Task(task, sub, gen_cfg, solver, scorer, self.cfg.batch_size,
                                {**sample, "bench": name, "attack": attack}))
        return out

    # -- the run ----------------------------------------------------------------------------------
    def _run_json(self) -> dict[str, Any]:
        """run.json's content; written only after every stage accepted the folder (see run())."""
        p = self.out / "run.json"
        created = None
        if p.exists() and not self.overwrite:
            try:
                created = json.loads(p.read_text()).get("created")
            except json.JSONDecodeError:
                created = None
        created = created or _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
        return {"created": created, "config": self.cfg.model_dump(mode="json"),
                "judge": {**self.judge.fingerprint(), "proxy": self.judge.proxy}, "provenance": provenance()}

    def run(self) -> dict[str, Any]:
        with self.runner.folder():
            return self._run_locked()

    def _run_locked(self) -> dict[str, Any]:
        if self._own_backend:  # the evaluated model: key, endpoint, weights — before anything is generated
            from ..preflight import check_backend, raise_on_error

            raise_on_error(check_backend(self.cfg.model, base_url=self.cfg.base_url))
        if self._own_judge:
            self.judge.preflight()  # a missing key or judge model fails now, not after the generations
        benches = self.benchmarks()
        info = self._run_json()
        results: dict[str, Any] = {}
        sampling = self.cfg.sampling()

        def sampling_of(r: Record) -> Any:  # each sample its own seed: K draws, reproducible
            if (r.model_extra or {}).get("sample") is None:
                return sampling
            return sampling.model_copy(update={"seed": sample_seed(self.cfg.seed, 0, r)})

        cache_use: dict[str, Any] = {}
        try:
            model_id = self._model_id()
            tasks = self.tasks(model_id, benches)
            self._say_budget(tasks)
            target = Target(self.backend, sampling_of, judge=self.judge)
            for task in tasks:
                results[task.name] = self.runner.run_task(task, target)
            cache_use = _cache_use({"model": self._backend, "judge": getattr(self.judge, "_backend", None)})
        finally:
            for solver in self.solvers.values():
                solver.close()
            if self._own_judge:
                self.judge.close()
            if self._own_backend and self._backend is not None:
                self._backend.close()
        write_stats(self.out / "run.json", info)
        summary = {"kind": "safety", "model": self.cfg.model, "label": self.cfg.label, "judge": self.judge.name,
                   "judge_fingerprint": self.judge.fingerprint(), "judge_part": self.cfg.judge_part,
                   "weights": model_id, "sampling": self.cfg.sampling_dict(), "created": info["created"],
                   "provenance": provenance(), "llm_cache": cache_use, "benchmarks": results}
        summary = self.runner.write_summary(summary, SAME_RUN_KEYS)
        check_failure_budget(results, {"generation": self.cfg.max_generation_failures, "judge": self.cfg.max_judge_failures})
        return summary

    def _say_budget(self, tasks: list[Any]) -> None:
        """One line before anything is generated: how many answers, how long each may be, and on a
        CPU a rough time (a default made for R1 on a GPU, 8,000 tokens, is hours on a CPU)."""
        import sys

        n = sum(len(t.items) for t in tasks)
        budget = n * self.cfg.max_new_tokens
        adaptive = [t.name for t in tasks if "@" in t.name and t.name.split("@", 1)[1] in ("pair", "tap", "crescendo")]
        line = (f"budget: {n} answers x up to {self.cfg.max_new_tokens} new tokens = up to {budget:,} tokens"
                + (f" (+ the adaptive attacks' queries in {', '.join(adaptive)})" if adaptive else ""))
        rate = cpu_tokens_per_second(self.cfg.model)
        if rate:
            secs = budget / rate
            took = f"~{secs:.0f} s" if secs < 90 else f"~{secs / 60:.0f} min" if secs < 5400 else f"~{secs / 3600:.1f} h"
            line += (f"; on this CPU at ~{rate:.0f} tokens/s (a rough guess from the model's size) up to {took}"
                     " — lower --max-new-tokens / --limit for a quick look")
        print(line, file=sys.stderr)

    def _model_id(self) -> str:
        """What identifies the evaluated weights: a local folder's weight files (size + mtime), so
        that retraining a model into the same folder never reuses the old generations."""
        mid = getattr(self.backend, "model_id", None)
        return str(mid()) if callable(mid) else self.cfg.model


def cpu_tokens_per_second(spec: str) -> float | None:
    """A rough batched generation rate for a local hf model on this machine's CPU (None: a GPU, an
    API, or a size we cannot read): ~40 tokens/s for SmolLM2-135M on 2 cores, scaled by parameters
    and cores. For a warning, never for a number we report."""
    import os

    try:
        import torch

        if torch.cuda.is_available():
            return None
        from ..llm import parse_spec
        from ..models import estimate_parameters

        cfg = parse_spec(spec)
    except (ImportError, ValueError, SafekeyError):
        return None
    params = estimate_parameters(cfg.model) if cfg.kind == "hf" else None
    if not params:
        return None
    ref = 135e6 * 1.3  # SmolLM2-135M by the same estimate (its tied embedding counted twice)
    return 40.0 * (ref / params) * (os.cpu_count() or 2) / 2


def _cache_use(backends: dict[str, Any]) -> dict[str, Any]:
    """``{"model": {"requests": n, "from_cache": k}, …}`` for this run: how many answers came from
    the response cache (keyed by model files, endpoint and sampling), so a reader can see it."""
    out: dict[str, Any] = {}
    for role, b in backends.items():
        stats = getattr(b, "stats", None)
        if callable(stats):
            s = stats()
            out[role] = {"requests": s.get("requests", 0), "from_cache": s.get("cache_hits", 0)}
    return out


def run_safety_eval(cfg: SafetyEvalConfig, out: str | Path, **kw: Any) -> dict[str, Any]:
    """Generate, judge and aggregate; returns the summary (also written to ``OUT/summary.json``)."""
    return SafetyRun(cfg, out, **kw).run()


# ---------------------------------------------------------------------------------------------
# printing


def summary_table(summary: dict[str, Any], *, proxy_note: bool = False) -> Any:
    """A rich Table of a summary: one row per benchmark, rates as ``x% [lo, hi]``."""
    from rich.table import Table

    shown = [m for m in METRIC_ORDER if any(m in b["metrics"] for b in summary["benchmarks"].values())]
    title = f"safety: {summary['model']} — judge {summary['judge']}" + (" (PROXY: refusal-phrase matcher)" if proxy_note else "")
    t = Table(title=title)
    t.add_column("benchmark")
    t.add_column("n", justify="right")
    for m in shown:
        t.add_column(m, justify="right")
    t.add_column("think not closed", justify="right")
    t.add_column("judge fail", justify="right")
    t.add_column("gen fail", justify="right")
    for name, b in summary["benchmarks"].items():
        cells = [fmt_rate(b["metrics"][m], pct=m not in SCORE_METRICS) if m in b["metrics"] else "—" for m in shown]
        t.add_row(name, str(b["n"]), *cells, _trunc_cell(b), str(b["judge_failures"]), str(b["generation_failures"]))
    return t


def _trunc_cell(b: dict[str, Any]) -> str:
    """``12.5% (3 unjudged)``: the share of generations cut inside their thinking."""
    t = (b.get("truncation") or {}).get("think_not_closed")
    if not t or not t.get("n"):
        return "—"
    k = (b.get("unjudged") or {}).get("think_not_closed", 0)
    return f"{t['rate'] * 100:.1f}%" + (f" ({k} unjudged)" if k else "")


def summary_markdown(summary: dict[str, Any]) -> str:
    """The same table as GitHub markdown (for READMEs and reports)."""
    shown = [m for m in METRIC_ORDER if any(m in b["metrics"] for b in summary["benchmarks"].values())]
    lines = ["| benchmark | n | " + " | ".join(shown) + " | think not closed | judge failures | generation failures |",
             "|---|---:|" + "---:|" * len(shown) + "---:|---:|---:|"]
    for name, b in summary["benchmarks"].items():
        cells = [fmt_rate(b["metrics"][m], pct=m not in SCORE_METRICS) if m in b["metrics"] else "—" for m in shown]
        lines.append(f"| {md_cell(name)} | {b['n']} | " + " | ".join(cells)
                     + f" | {_trunc_cell(b)} | {b['judge_failures']} | {b['generation_failures']} |")
    return "\n".join(lines)


__all__ = [
    "EvalFailed",
    "SafetyEvalConfig",
    "SafetyRun",
    "limit_sample",
    "run_safety_eval",
    "summary_markdown",
    "summary_table",
]
