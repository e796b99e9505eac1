"""The 18 STAR-1 training sources and the decontamination test sets.

Each source keeps its canonical hub id / URL and its filter, and accepts a local file instead
(``overrides`` in the collect config): offline here, on a cluster with hub access unchanged.
Record ids are ``SOURCE:ROW`` with ROW the row index in the loaded table (before filtering), so an
id never changes when a filter or a later stage changes.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..paths import data_dir
from ..sources import load_table, read_text_source
from ..types import SafekeyError

Row = dict[str, Any]
RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class SourceSpec:
    """Where a dataset lives and how to get its prompts out of a row."""

    name: str
    location: str  # hub id or URL
    field: str  # column holding the prompt
    splits: tuple[str | None, ...] = (None,)
    config: str | None = None
    keep: Callable[[Row], bool] | None = None  # the dataset's filter (harmful rows only, …)
    clean: Callable[[str], str] | None = None
    reader: str = "table"  # table | lines | json_key | json_list | hexphi
    json_key: str = "instructions"
    shared: str | None = None  # default local copy under the shared data folder, when there is one
    sample: int | None = None  # fixed-seed sample size (the WildJailbreak eval 250)
    note: str = ""


def _false(v: Any) -> bool:
    return v is False or (isinstance(v, str) and v.strip().lower() == "false") or (v == 0 and not isinstance(v, str))


_ALERT_TAGS = re.compile(r"### (Instruction:|Response:)\n?")

# the reference's order (smallest first): earlier sources win cross-source duplicates
TRAIN_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("GPTFuzz", f"{RAW}/sherdencooper/GPTFuzz/master/datasets/questions/question_list.csv", "text"),
    SourceSpec("SimpleSafetyTests", "Bertievidgen/SimpleSafetyTests", "prompt", splits=("test",)),
    SourceSpec("MaliciousInstruct", f"{RAW}/Princeton-SysML/Jailbreak_LLM/main/data/MaliciousInstruct.txt", "text", reader="lines"),
    SourceSpec("QHarm", f"{RAW}/vinid/safety-tuned-llamas/main/data/evaluation/Q-Harm.json", "text", reader="json_key"),
    SourceSpec("TDCRedTeaming", f"{RAW}/centerforaisafety/tdc2023-starter-kit/main/red_teaming/data/dev/behaviors.json "
               f"{RAW}/centerforaisafety/tdc2023-starter-kit/main/red_teaming/data/test/behaviors.json", "text", reader="json_list"),
    SourceSpec("MaliciousInstructions", f"{RAW}/vinid/safety-tuned-llamas/main/data/evaluation/I-MaliciousInstructions.json",
               "text", reader="json_key"),
    SourceSpec("HarmfulQ", f"{RAW}/SALT-NLP/chain-of-thought-bias/main/data/dangerous-q/toxic_outs.json", "text", reader="json_list"),
    SourceSpec("HExPHI", "LLM-Tuning-Safety/HEx-PHI", "text", reader="hexphi",
               note="gated; CSVs without a header row (the reference lost and re-appended each first row)"),
    SourceSpec("HarmBench", f"{RAW}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_all.csv",
               "Behavior", keep=lambda r: r.get("FunctionalCategory") != "contextual",
               shared="harmbench/harmbench_behaviors_text_all.csv",
               note="non-contextual only; also an evaluation benchmark, so decontamination removes it when harmbench is a test set"),
    SourceSpec("AttaQ", "ibm-research/AttaQ", "input", splits=("train",)),
    SourceSpec("HarmfulQA", "declare-lab/HarmfulQA", "question", splits=("train",)),
    SourceSpec("SafetyInstructions", f"{RAW}/vinid/safety-tuned-llamas/main/data/training/safety_only_data_Instructions.json", "instruction"),
    SourceSpec("UltraSafety", "openbmb/UltraSafety", "instruction", splits=("train",)),
    SourceSpec("ALERT", "Babelscape/ALERT", "prompt", config="alert", splits=("test",),
               clean=lambda t: _ALERT_TAGS.sub("", t).strip()),
    SourceSpec("SaladBench", "OpenSafetyLab/Salad-Data", "question", config="base_set", splits=("train",)),
    SourceSpec("PKUSafeRLHF", "PKU-Alignment/PKU-SafeRLHF", "prompt", config="default", splits=("train", "test"),
               keep=lambda r: _false(r.get("is_response_0_safe")) and _false(r.get("is_response_1_safe")),
               note="both responses unsafe"),
    SourceSpec("BeaverTails", "PKU-Alignment/BeaverTails", "prompt", splits=("330k_train", "330k_test"),
               keep=lambda r: _false(r.get("is_safe")), note="is_safe == False"),
    SourceSpec("wildjailbreak", "allenai/wildjailbreak", "vanilla", config="train", splits=("train",),
               keep=lambda r: str(r.get("data_type", "")).endswith("_harmful"),
               note="harmful rows only (vanilla_harmful, adversarial_harmful); the reference forgot the data_type filter"),
)

TEST_SETS: tuple[SourceSpec, ...] = (
    SourceSpec("strongreject", f"{RAW}/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv",
               "forbidden_prompt", shared="strongreject/strongreject_dataset.csv"),
    SourceSpec("jbb", "JailbreakBench/JBB-Behaviors", "Goal", config="behaviors", splits=("harmful",), shared="jbb/behaviors.csv"),
    SourceSpec("sgbench", f"{RAW}/MurrayTom/SG-Bench/main/datasets/SG-Bench/original_query/malicious_instruct.json", "query",
               note="SG-Bench original queries (1,442); URL best-effort, pass a local file when it moves"),
    SourceSpec("wildjailbreak_eval", "allenai/wildjailbreak", "adversarial", config="eval", splits=("train",),
               keep=lambda r: r.get("data_type") == "adversarial_harmful", sample=250,
               note="adversarial_harmful, seed-42 sample of 250"),
    SourceSpec("xstest", f"{RAW}/paul-rottger/exaggerated-safety/main/xstest_prompts.csv", "prompt",
               keep=lambda r: r.get("label") == "safe", shared="xstest/xstest_prompts.csv", note="safe prompts (250)"),
    SourceSpec("advbench", f"{RAW}/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv", "goal",
               shared="advbench/harmful_behaviors.csv"),
    SourceSpec("harmbench", f"{RAW}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_all.csv",
               "Behavior", shared="harmbench/harmbench_behaviors_text_all.csv",
               note="all behaviours: the multi-turn jailbreak set is built from HarmBench objectives"),
    SourceSpec("prefilling", f"{RAW}/eric-ai-lab/SafeKey/main/benchmark/safe_benchmark/datasets/advbench_prefilling/harmful_r1_8b_gptjudge.csv",
               "goal", shared="prefilling/harmful_r1_8b_gptjudge.csv"),
    SourceSpec("wildchat", "", "question", note="STAR-1's WildChat subset has no public copy: give a local file (collect.overrides.wildchat); "
                                               "`eval safety --bench wildchat` builds a similar set from allenai/WildChat-1M (gated)"),
)

SOURCES_BY_NAME = {s.name: s for s in TRAIN_SOURCES}
TESTS_BY_NAME = {s.name: s for s in TEST_SETS}


class Override(BaseModel):
    """A local replacement for a source: a file in the source's own format, or safekey records."""

    model_config = ConfigDict(extra="forbid")

    path: str
    format: str = Field("native", pattern="^(native|records)$")
    # records format: keep rows whose `source` equals this (default: the source's name)
    where_source: str | None = None
    text_field: str | None = None


def _as_override(v: str | dict | Override) -> Override:
    if isinstance(v, Override):
        return v
    if isinstance(v, str):
        return Override(path=v)
    return Override.model_validate(v)


def _read_json_any(location: str) -> Any:
    return json.loads(read_text_source(location))


def _raw_rows(spec: SourceSpec, location: str, local: bool) -> list[Row]:
    """Rows of the dataset in its native shape, from `location` (several URLs: space-separated)."""
    if spec.reader == "lines":
        return [{"text": ln} for ln in read_text_source(location).splitlines() if ln.strip()]
    if spec.reader in ("json_key", "json_list"):
        rows: list[Row] = []
        for loc in location.split():
            data = _read_json_any(loc)
            if isinstance(data, dict):
                data = data.get(spec.json_key, data.get("data"))
            if not isinstance(data, list):
                raise SafekeyError(f"{spec.name}: {loc}: expected a JSON list (or a {spec.json_key!r} list)")
            for x in data:
                rows.append({"text": x} if isinstance(x, str) else dict(x))
        return rows
    if spec.reader == "hexphi":
        return _hexphi_rows(location, local)
    if local:
        return load_table(location)
    rows = []
    for split in spec.splits:
        rows += load_table(location, split=split, config=spec.config)
    return rows


def _hexphi_rows(location: str, local: bool) -> list[Row]:
    """HEx-PHI ships one header-less CSV per category; read every row (no row lost as a header)."""
    import pandas as pd

    p = Path(location).expanduser()
    if not p.exists():
        if local:
            raise SafekeyError(f"HExPHI: {p} not found")
        try:
            from huggingface_hub import snapshot_download

            p = Path(snapshot_download(location, repo_type="dataset"))
        except Exception as e:  # offline or gated: say so plainly
            raise SafekeyError(f"HExPHI: could not fetch {location} ({type(e).__name__}); pass a local folder of CSVs") from None
    files = sorted(p.glob("*.csv")) if p.is_dir() else [p]
    rows: list[Row] = []
    for f in files:
        df = pd.read_csv(f, header=None, keep_default_na=False, dtype=str)
        rows += [{"text": t, "category": f.stem} for t in df.iloc[:, 0]]
    return rows


def load_source(spec: SourceSpec, override: str | dict | Override | None = None, *, seed: int = 42) -> tuple[list[Row], str]:
    """(rows with ``id``/``question``/``source``, where they came from). Filters are applied here."""
    ov = _as_override(override) if override is not None else None
    if ov is None and spec.shared and data_dir() is not None and (data_dir() / spec.shared).exists():
        ov = Override(path=str(data_dir() / spec.shared))
    if ov is None and not spec.location:
        raise SafekeyError(f"{spec.name}: no public copy; give a local file in the config overrides")
    if ov is not None and ov.format == "records":
        raw = load_table(ov.path)
        want = ov.where_source or spec.name
        out = []
        for i, r in enumerate(raw):
            if r.get("source", want) != want:
                continue
            text = r.get(ov.text_field or "question")
            rid = r.get("id", i)
            out.append({"row": str(rid), "text": text})
        where = f"{ov.path} (records, source={want})"
    else:
        location = ov.path if ov is not None else spec.location
        raw = _raw_rows(spec, location, local=ov is not None)
        field_name = (ov.text_field if ov is not None else None) or spec.field
        out = []
        for i, r in enumerate(raw):
            if spec.keep is not None:
                try:
                    if not spec.keep(r):
                        continue
                except KeyError as e:
                    raise SafekeyError(f"{spec.name}: {location}: filter needs column {e}") from None
            if field_name not in r:
                raise SafekeyError(f"{spec.name}: {location}: row {i} has no column {field_name!r} (columns: {sorted(r)[:12]})")
            out.append({"row": f"{i:07d}", "text": r[field_name]})
        where = location
    rows: list[Row] = []
    for o in out:
        text = o["text"]
        if not isinstance(text, str) or not text.strip():
            continue
        if spec.clean is not None:
            text = spec.clean(text)
        rows.append({"id": f"{spec.name}:{o['row']}", "question": text.strip(), "source": spec.name})
    if spec.sample is not None and len(rows) > spec.sample:
        rng = random.Random(seed)
        rows = sorted(rng.sample(rows, spec.sample), key=lambda r: r["id"])
    return rows, where


def source_table() -> list[dict[str, str]]:
    """A human-readable list of every source and test set with its canonical location and filter."""
    out = []
    for kind, specs in (("train", TRAIN_SOURCES), ("test", TEST_SETS)):
        for s in specs:
            out.append({"kind": kind, "name": s.name, "location": s.location or "(local file only)",
                        "config": s.config or "", "splits": ",".join(x for x in s.splits if x) or "", "note": s.note})
    return out
