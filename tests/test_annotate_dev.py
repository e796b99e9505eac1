"""Heuristic U/K labeller vs the hand-labelled dev set (tests/fixtures/uk_dev.jsonl).

The 53 STAR-1 records were picked by a seeded draw spread over categories and sources (never from
the first 40), plus hard cases found by pattern (generic openings, multi-sentence quotes,
abbreviations, long prompts). Gold labels were set by reading each trace, before the heuristic
existed, with these guidelines:

* U = the opening run of sentences that restate or interpret the request (what the user asks,
  wants, says or mentions, details of their scenario). The first sentence is always in U; a
  generic opening ("I need to figure out how to respond to this user's query.") is followed by
  the restatement, which is still U, as is "Let me read it again carefully."
* K = the first sentence after U: an evaluation ("Hmm, that's concerning."), a plan ("I need to
  figure out how to respond…", "First, I should consider the policies."), a recall, or the start
  of solving.

`gold_k_is_safety` was added later (one annotator, after the lexicon existed): true when the gold
K names a safety concern or the policies (harm, danger, legality, "concerning", "sensitive",
"safety policies"); false for plain plans and for hedges without a stated concern ("Hmm, that's a
tricky one.", "acknowledge their concern and express empathy").

Rows alternate between a `tune` half (used while writing the rules, together with unlabelled
STAR-1 traces) and a `heldout` half (scored once at the end). Both numbers are asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safekey.annotate.labellers import HeuristicLabeller
from safekey.sentences import segment, segment_regex
from safekey.types import Record

DEV = Path(__file__).parent / "fixtures" / "uk_dev.jsonl"


@pytest.fixture(scope="module")
def dev():
    rows = [json.loads(line) for line in DEV.open()]
    assert len(rows) >= 40
    return rows


def _record(row) -> Record:
    return Record(id=row["id"], question=row["question"], response=f"<think>\n{row['thinking_head']}\n</think>\n\nx")


def test_dev_set_is_well_formed(dev):
    assert len({r["id"] for r in dev}) == len(dev)
    assert len({r["source"] for r in dev}) >= 5 and len({r["category"][0] for r in dev}) >= 8
    for r in dev:
        th = r["thinking_head"]
        assert th[r["gold_k_end"] - 8 - len(r["gold_k"]) : r["gold_k_end"] - 8] == r["gold_k"]
        assert th[: r["gold_u_end"] - 8] == r["gold_u"]


def test_heuristic_exact_k_accuracy(dev):
    labs = HeuristicLabeller().label([_record(r) for r in dev])
    hit = {"tune": [], "heldout": []}
    for r, o in zip(dev, labs):
        hit[r["split"]].append(o.k_text == r["gold_k"] and o.u_end == r["gold_u_end"] and o.k_end == r["gold_k_end"])
    acc = {k: sum(v) / len(v) for k, v in hit.items()}
    overall = sum(map(sum, hit.values())) / len(dev)
    print(f"exact-K accuracy: all {overall:.3f} (n={len(dev)}), tune {acc['tune']:.3f}, heldout {acc['heldout']:.3f}")
    assert overall >= 0.85
    assert acc["heldout"] >= 0.85


def test_segmenter_hits_gold_boundaries_where_regex_does_not(dev):
    """Every gold U end / K span is a sentence boundary under our segmenter, and no sentence ends
    inside the quoted question; the regex baseline breaks the quoted multi-sentence questions."""

    def ok(row, sents) -> bool:
        th, u, k = row["thinking_head"], row["gold_u_end"] - 8, row["gold_k_end"] - 8
        ends, starts = {s.end for s in sents}, {s.start for s in sents}
        inside_quote = any(s.end < u and th[: s.end].count('"') % 2 for s in sents)
        return u in ends and k in ends and k - len(row["gold_k"]) in starts and not inside_quote

    ours = sum(ok(r, segment(r["thinking_head"], question=r["question"])) for r in dev)
    regex = sum(ok(r, segment_regex(r["thinking_head"])) for r in dev)
    print(f"gold-boundary agreement: pysbd+rules {ours}/{len(dev)}, regex {regex}/{len(dev)}")
    assert ours == len(dev)
    assert regex < ours


def test_safety_lexicon_on_gold_k(dev):
    """k_is_safety (the lexicon) against the hand labels: measured 47/53, P 0.90, R 0.95."""
    from safekey.annotate.lexicon import is_safety

    pred = [is_safety(r["gold_k"]) for r in dev]
    gold = [r["gold_k_is_safety"] for r in dev]
    tp = sum(p and g for p, g in zip(pred, gold))
    precision, recall = tp / sum(pred), tp / sum(gold)
    agree = sum(p == g for p, g in zip(pred, gold))
    assert agree >= 47 and precision >= 0.9 and recall >= 0.94, (agree, precision, recall)
    # the known disagreements are hedges without a stated concern, and risks named without concern words
    wrong = {r["gold_k"] for r, p, g in zip(dev, pred, gold) if p != g}
    assert "Hmm, that's a tricky one." in wrong and "Hmm, that sounds like a security issue." in wrong
