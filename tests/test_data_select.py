"""select: the balanced removal matches a plain brute-force transcription of the reference loop."""

from __future__ import annotations

import json
import random

import pytest

from safekey.datamaking.select import balance, eligible, run
from safekey.store import read_records
from safekey.types import CATEGORIES, Record


def brute_force(items: list[Record], n: int) -> list[str]:
    """The reference algorithm written plainly: O(N²), shares recomputed every removal."""
    data = sorted(items, key=lambda r: r.id)
    while len(data) > n:
        cat_num = {c: sum(1 for it in data if c in it.category) for c in CATEGORIES}
        total = sum(cat_num.values())
        cat_p = {c: cat_num[c] / total for c in CATEGORIES}
        src_p = {s: sum(1 for it in data if it.source == s) / len(data) for s in {it.source for it in data}}
        w = [src_p[it.source] * sum([cat_p[c] for c in it.category]) for it in data]
        data.remove(data[w.index(max(w))])
    return [r.id for r in data]


@pytest.fixture(scope="module")
def star1(shared):
    return [Record.model_validate(r) for r in json.loads(shared("star1/STAR-1.json").read_text())]


@pytest.mark.parametrize("n", [1, 37, 250, 600])
def test_balance_equals_brute_force_on_real_star1(star1, n):
    pool = star1[:700]
    assert [r.id for r in balance(pool, n)] == brute_force(pool, n)


def test_balance_ties_and_multi_category(star1):
    # many exact weight ties: few sources, shuffled categories in varying list order
    rng = random.Random(3)
    pool = []
    for i, r in enumerate(star1[:300]):
        cats = rng.sample(list(CATEGORIES), rng.choice([1, 1, 2, 3]))
        pool.append(r.model_copy(update={"id": f"x{i:04d}", "source": rng.choice(["A", "B", "C"]), "category": cats}))
    for n in (10, 100, 299):
        assert [r.id for r in balance(pool, n)] == brute_force(pool, n)


def test_balance_deterministic_under_shuffle(star1):
    base = [r.id for r in balance(star1, 150)]
    for seed in range(3):
        sh = star1[:]
        random.Random(seed).shuffle(sh)
        assert [r.id for r in balance(sh, 150)] == base
    assert len(base) == 150 and len(set(base)) == 150


def test_balance_evens_out_sources(star1):
    chosen = balance(star1, 200)
    share = lambda recs, s: sum(r.source == s for r in recs) / len(recs)
    # the dominant source loses share, a rare one gains
    assert share(chosen, "SaladBench") < share(star1, "SaladBench")
    assert share(chosen, "HExPHI") > share(star1, "HExPHI")


def test_run_filters_all_10_and_other(tmp_path, star1):
    recs = [r.model_copy() for r in star1[:60]]
    recs[0] = recs[0].model_copy(update={"score": {**recs[0].score, "Accuracy_of_Thinking_Process": 9}})
    recs[1] = recs[1].model_copy(update={"category": ["Other"]})
    recs[2] = recs[2].model_copy(update={"score": None})
    inp = tmp_path / "scored.jsonl"
    inp.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    st = run(str(inp), str(tmp_path / "sel.jsonl"), __import__("safekey.datamaking.select", fromlist=["SelectConfig"]).SelectConfig(n=40))
    out = list(read_records(tmp_path / "sel.jsonl"))
    assert st["eligible"] == 57 and st["selected"] == 40 == len(out)
    assert {recs[0].id, recs[1].id, recs[2].id}.isdisjoint(r.id for r in out)
    assert all(r.unsafe == 1 and eligible(r) for r in out)


def test_forced_thinking_is_kept_out_unless_allowed(tmp_path, star1):
    from safekey.datamaking.select import SelectConfig

    recs = [r.model_copy(update={"think_forced": True}) if i < 5 else r.model_copy() for i, r in enumerate(star1[:30])]
    inp = tmp_path / "scored.jsonl"
    inp.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    st = run(str(inp), str(tmp_path / "a.jsonl"), SelectConfig(n=100))
    assert st["eligible"] == 25 and st["think_forced"] == 5
    assert {r.id for r in recs[:5]}.isdisjoint(r.id for r in read_records(tmp_path / "a.jsonl"))
    assert run(str(inp), str(tmp_path / "b.jsonl"), SelectConfig(n=100, allow_forced_thinking=True))["eligible"] == 30
