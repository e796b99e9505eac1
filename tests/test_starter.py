"""The committed starter data: shape, balance, spans, no train/held-out overlap, reproducible."""

from __future__ import annotations

import collections
import json
import re

import pytest

from safekey.paths import resource
from safekey.resources.starter import make_starter
from safekey.store import read_records
from safekey.types import CATEGORIES, THINK_RE

STARTER = resource("starter")


def _norm(q: str) -> str:
    return re.sub(r"\s+", " ", q.lower()).strip()


@pytest.fixture(scope="module")
def train():
    return list(read_records(STARTER / "train.jsonl"))


def test_counts_and_categories(train):
    by = collections.Counter((r.unsafe, r.category[0]) for r in train)
    assert sum(v for (u, _), v in by.items() if u == 1) >= 60
    assert sum(v for (u, _), v in by.items() if u == 0) >= 60
    for cat in CATEGORIES:  # every policy category, both sides
        assert by[(1, cat)] >= 5 and by[(0, cat)] >= 5, cat
    assert len({r.id for r in train}) == len(train)
    assert len({_norm(r.question) for r in train}) == len(train)


def test_response_shape_and_spans(train):
    from safekey.judges.refusal_cues import read_refusal

    for r in train:
        m = THINK_RE.match(r.response)
        assert m, r.id
        u = r.response[len("<think>\n") : r.u_end]
        k = r.response[r.u_end : r.k_end].strip()
        assert u.startswith("The user ") and u.endswith("."), r.id
        assert k == r.k_text and k.endswith((".", "!")), r.id
        assert r.k_end <= len("<think>\n") + len(m.group("thinking")), f"{r.id}: K runs past the thinking"
        answer = m.group("answer")
        refused = read_refusal(answer).refused
        if r.unsafe:
            # the key sentence voices the concern and cites our policy for this category; the answer refuses
            assert "polic" in k and r.category[0] in k, r.id
            assert r.k_is_safety is True
            assert refused, f"{r.id}: harmful item's answer has no refusal phrase"
        else:
            assert r.k_is_safety is False, f"{r.id}: benign key sentence reads as a safety concern: {k}"
            assert not refused, f"{r.id}: benign answer looks like a refusal to the keyword judge"


def test_heldout_disjoint_and_jailbreaks_wrap_plain_prompts(train):
    seen = {_norm(r.question) for r in train}
    harm = [json.loads(x) for x in (STARTER / "heldout_harmful.jsonl").read_text().splitlines()]
    jb = [json.loads(x) for x in (STARTER / "heldout_jailbreak.jsonl").read_text().splitlines()]
    ben = [json.loads(x) for x in (STARTER / "heldout_benign.jsonl").read_text().splitlines()]
    traces = list(read_records(STARTER / "heldout_traces.jsonl"))
    assert len(harm) >= 20 and len(jb) == len(harm) and len(ben) >= 20
    for item in harm + ben + [t.model_dump() for t in traces]:
        assert _norm(item["question"]) not in seen, item["id"]
    assert {r["unsafe"] for r in harm + jb} == {1} and {r["unsafe"] for r in ben} == {0}
    plain = {r["id"]: r["question"] for r in harm}
    assert len({r["attack"] for r in jb}) >= 4  # several jailbreak families
    for r in jb:
        assert plain[r["plain_id"]] in r["question"] and r["question"] != plain[r["plain_id"]]
    assert {t.question for t in traces} == {r["question"] for r in harm + ben}
    for r in harm + jb + ben:
        assert r["category"][0] in CATEGORIES


def test_generator_reproduces_committed_files(train):
    """Regenerating gives the same prompts, responses and spans (the annotator's output is committed,
    and it equals the by-construction spans)."""
    built = make_starter.build()
    got = {r["id"]: r for r in built["train.jsonl"]}
    assert set(got) == {r.id for r in train}
    for r in train:
        g = got[r.id]
        assert (g["question"], g["response"], g["u_end"], g["k_end"]) == (r.question, r.response, r.u_end, r.k_end)
    for name in ("heldout_harmful.jsonl", "heldout_jailbreak.jsonl", "heldout_benign.jsonl"):
        committed = [json.loads(x) for x in (STARTER / name).read_text().splitlines()]
        assert committed == built[name]


def test_heuristic_annotator_agrees_with_construction(train, tmp_path):
    """The annotate stage, run on the traces with spans removed, finds the same U and K."""
    from safekey.annotate.labellers import LabellerConfig
    from safekey.annotate.stage import annotate_file

    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({k: v for k, v in r.to_json().items() if k not in ("u_end", "k_end", "k_text",
                                       "k_is_safety", "u_sentences", "uk_labeller")}) + "\n" for r in train))
    annotate_file(raw, tmp_path / "out.jsonl", LabellerConfig())
    got = {r.id: (r.u_end, r.k_end) for r in read_records(tmp_path / "out.jsonl")}
    assert got == {r.id: (r.u_end, r.k_end) for r in train}
