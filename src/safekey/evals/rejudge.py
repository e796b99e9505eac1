"""Re-judge a finished safety run with another judge, without generating again.

Why a command: comparing judges (a keyword proxy vs Llama-Guard vs GPT-4o, or two guard models)
on the same generations is the cheap way to see how much a reported number depends on the judge.
The generations are reused only when they are provably the same: RUN2's generation stage gets the
configuration recorded in RUN (model, weight fingerprint, sampling, benchmark sources), and the
copied ``generations.jsonl`` must carry exactly that fingerprint; a backend that refuses to
generate guarantees that nothing is produced anew.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..store import sidecar, write_stats
from ..types import SafekeyError
from .safety import SafetyEvalConfig, SafetyRun


class _NoGeneration:
    """Stands in for the evaluated model: reports RUN's weights, and refuses to generate."""

    def __init__(self, weights: str, run: Path):
        self._weights, self._run = weights, run

    def model_id(self) -> str:
        return self._weights

    def generate(self, requests, cache=None):
        raise SafekeyError(f"{self._run} lacks generations for {len(requests)} item(s) (failed or unfinished); "
                           "finish it with `safekey eval safety` first, then rejudge")

    def close(self) -> None:
        return None


def rejudge(run: str | Path, out: str | Path, *, judge: str, judge_model: str | None = None,
            judge_base_url: str | None = None, judge_part: str | None = None, overwrite: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Judge RUN's generations with `judge` into OUT; returns OUT's summary."""
    run, out = Path(run), Path(out)
    from ..paths import refuse_output_in_inputs, safe_name

    if run.resolve() == out.resolve() or run.resolve() in out.resolve().parents or out.resolve() in run.resolve().parents:
        raise SafekeyError("rejudge writes a new run folder: give an -o outside RUN (and RUN not inside it)")
    refuse_output_in_inputs(out, [run])
    try:
        info = json.loads((run / "run.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SafekeyError(f"{run}: not a finished safety run ({e})") from None
    if summary.get("kind") != "safety":
        raise SafekeyError(f"{run}: not a safety run (kind={summary.get('kind')!r})")
    cfg = SafetyEvalConfig.model_validate({**info["config"], "judge": judge, "judge_model": judge_model,
                                           "judge_base_url": judge_base_url,
                                           "judge_part": judge_part or info["config"].get("judge_part", "answer")})
    for name in summary["benchmarks"]:
        name = safe_name(name, what=f"{run}/summary.json: benchmark")
        src = run / name / "generations.jsonl"
        if not src.exists():
            raise SafekeyError(f"{run}: no {name}/generations.jsonl")
        dst = out / name / "generations.jsonl"
        if dst.exists() and not overwrite:
            continue  # a resumed rejudge: the stage check below still verifies the fingerprint
        dst.parent.mkdir(parents=True, exist_ok=True)
        for f in (src, sidecar(src, "meta.json"), sidecar(src, "config.yaml")):
            shutil.copyfile(f, dst.parent / f.name)
    backend = _NoGeneration(summary.get("weights") or cfg.model, run)
    s = SafetyRun(cfg, out, backend=backend, rejudge=True, progress=progress).run()
    s["rejudged_from"] = str(run.resolve())
    write_stats(out / "summary.json", s)
    return s


__all__ = ["rejudge"]
