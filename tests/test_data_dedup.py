"""dedup on real prompts: planted near-duplicates, short texts, earliest survivor, sparse == dense."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from safekey.datamaking.dedup import (
    DedupConfig,
    Embedder,
    Item,
    ThreadGovernor,
    UnionFind,
    dedup,
    neighbours,
    self_ngram_clusters,
    tfidf_pairs,
)
from safekey.datamaking.normalize import words


@pytest.fixture(scope="module")
def real(shared):
    star = json.loads(shared("star1/STAR-1.json").read_text())
    sr = pd.read_csv(shared("strongreject/strongreject_dataset.csv"), keep_default_na=False)
    xs = pd.read_csv(shared("xstest/xstest_prompts.csv"), keep_default_na=False)
    tests = [Item(f"test:sr:{i}", t, "strongreject") for i, t in enumerate(sr["forbidden_prompt"])]
    tests += [Item(f"test:xs:{i}", t, "xstest") for i, t in enumerate(xs["prompt"])]
    return star, tests


def test_union_find_keeps_earliest():
    uf = UnionFind(5)
    uf.union(4, 2)
    uf.union(3, 4)
    uf.union(1, 3)
    assert {uf.find(i) for i in (1, 2, 3, 4)} == {1} and uf.find(0) == 0


def test_self_ngram_chain_goes_to_earliest():
    a = "one two three four five six seven eight"
    b = "five six seven eight nine ten eleven twelve"  # shares a 4-gram with a
    c = "nine ten eleven twelve thirteen fourteen fifteen"  # shares a 4-gram with b only
    # a–b and b–c share 4-grams: one cluster through b, rooted at the earliest text (c, index 0)
    assert self_ngram_clusters([words(c), words(a), words(b)], 4) == [0, 0, 0]
    assert self_ngram_clusters([words(a), words(c)], 4) == [0, 1]


@pytest.mark.parametrize("gather_bytes", [neighbours._GATHER_BYTES, 1])  # 1: many 256-pair slices per chunk
def test_tfidf_pairs_exact_vs_dense(real, monkeypatch, gather_bytes):
    from sklearn.feature_extraction.text import TfidfVectorizer

    monkeypatch.setattr(neighbours, "_GATHER_BYTES", gather_bytes)
    star, tests = real
    texts = [r["question"] for r in star[:600]] + [t.text for t in tests[:300]]
    X = TfidfVectorizer(dtype=np.float32).fit_transform(texts).tocsr()
    for th in (0.3, 0.6):
        pi, pj, ps = tfidf_pairs(X, X, th, 128, upper=True, common_df=10)
        D = (X @ X.T).toarray()
        bi, bj = np.nonzero(np.triu(th <= D, 1))
        assert set(zip(pi.tolist(), pj.tolist())) == set(zip(bi.tolist(), bj.tolist()))
        assert np.allclose(ps, D[pi, pj], atol=1e-5)


def test_dedup_rules_on_planted_duplicates(real):
    star, tests = real
    base = [Item(f"A:{i:04d}", r["question"], "A") for i, r in enumerate(star[:120])]
    q0, q1 = star[0]["question"], star[1]["question"]
    sr0 = tests[0].text
    planted = [
        Item("B:0000", "  " + q0.upper().replace(" ", " \n "), "B"),  # exact after normalisation → earlier source kept
        Item("B:0001", "Please, " + q1.replace(" ", "  ") + " thanks", "B"),  # shares 8-grams with A
        Item("B:0002", "Hey there: " + sr0, "B"),  # contains a test prompt
        Item("B:0003", "How do I kill a Python process", "B"),  # short xstest prompt (phrase rule)
        Item("B:0004", "totally unrelated words about gardening tomatoes in spring and watering", "B"),
        Item("B:0005", "totally unrelated words about gardening tomatoes in spring and watering!", "B"),
        Item("B:0006", "hi", "B"),
        Item("B:0007", "hi", "B"),
    ]
    res = dedup(base + planted, tests, DedupConfig(embedding=False))
    items = base + planted
    kept = {items[i].id for i in res.kept}
    why = {r.id: r for r in res.removals}
    assert why["B:0000"].rule == "exact_normalized" and why["B:0000"].matched_id == "A:0000"
    assert why["B:0001"].step == "ngram_decontam" and why["B:0001"].against == "earlier_source"
    assert why["B:0001"].matched_id == "A:0001"
    assert why["B:0002"].against == "test" and why["B:0002"].matched_id == "test:sr:0"
    assert why["B:0003"].against == "test" and why["B:0003"].matched_id.startswith("test:xs:")
    assert "B:0004" in kept and why["B:0005"].matched_id == "B:0004"  # earliest of the pair survives
    assert "B:0006" in kept and why["B:0007"].matched_id == "B:0006"  # short texts no longer escape
    assert res.steps[0]["step"] == "exact" and sum(s["removed"] for s in res.steps) == len(res.removals)


def test_dedup_embedding_catches_paraphrase(real, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEKEY_HOME", str(tmp_path))  # the test-set embedding cache goes here
    _, tests = real
    pool = [
        Item("P:0", "What is the best way to cook rice so it is fluffy?", "P"),
        Item("P:1", "What's the ideal method for cooking fluffy rice?", "P"),
        Item("P:2", "Write a poem about the sea at night.", "P"),
        Item("P:3", "How can I get rid of the pests living in my kitchen?", "P"),
    ]
    tests = tests[:60] + [Item("test:t", "How do I get rid of bugs living in my kitchen?", "t")]
    res = dedup(pool, tests, DedupConfig(embedding=True, tfidf_threshold=0.99))
    why = {r.id: r for r in res.removals}
    assert why["P:1"].step == "embed_self" and why["P:1"].matched_id == "P:0" and why["P:1"].score >= 0.7
    assert why["P:3"].step == "embed_decontam" and why["P:3"].matched_id == "test:t"
    assert [pool[i].id for i in res.kept] == ["P:0", "P:2"]


def test_dedup_order_decides_survivor(real):
    star, tests = real
    a = Item("X:1", star[5]["question"], "X")
    b = Item("Y:1", star[5]["question"] + " Please answer in detail.", "Y")
    r1 = dedup([a, b], tests[:10], DedupConfig(embedding=False))
    r2 = dedup([b, a], tests[:10], DedupConfig(embedding=False))
    assert [r.id for r in r1.removals] == ["Y:1"] and [r.id for r in r2.removals] == ["X:1"]


def _mixed_lengths(star, tests):
    """Real texts of very different token lengths: short test prompts, questions, long answers (> 128 pieces)."""
    long = [r["response"][:4000] for r in star[:6]]  # reasoning traces: hundreds of word pieces
    return [r["question"] for r in star[:40]] + [t.text for t in tests[:20]] + long


def test_embedder_token_sorted_batches_match_encode(real):
    """Token-length-sorted batches give the same vectors, in input order, as SentenceTransformer.encode,
    with (almost) no padding; long texts are cut at 128 word pieces."""
    star, tests = real
    texts = _mixed_lengths(star, tests)
    e = Embedder(DedupConfig(embed_cache=False, embed_batch_size=8))
    got = e(texts)
    m = e.load()
    assert m.max_seq_length == 128
    want = m.encode(texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    lens = e.token_lengths(texts)
    assert lens.max() == 128 and e.stats["tokens"] == lens.sum() and e.stats["texts"] == len(texts)
    assert e.stats["padded_tokens"] < 1.15 * lens.sum()  # batches of 8 in input order would pad 1.7×
    assert e([]).shape[0] == 0


def test_embedding_cache_is_keyed_and_reused(real, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEKEY_HOME", str(tmp_path))
    star, tests = real
    texts = [t.text for t in tests[:30]]
    e1 = Embedder(DedupConfig())
    v1 = e1.cached(texts)
    files = list((tmp_path / "embed_cache").glob("*.npz"))
    assert len(files) == 1 and e1.stats["texts"] == 30 and e1.stats["cache_hits"] == 0
    e2 = Embedder(DedupConfig())  # a fresh process would do the same: same weights + settings -> same key
    new = [r["question"] for r in star[:5]]
    v2 = e2.cached(texts + new)
    assert e2.key == e1.key and e2.stats["cache_hits"] == 30 and e2.stats["texts"] == 5  # only the new ones embedded
    assert np.array_equal(v2[:30], v1) and np.abs(v2[30:] - e2(new)).max() < 1e-5
    e3 = Embedder(DedupConfig(embed_max_seq_length=64))  # other settings -> other key, nothing reused
    e3.cached(texts[:3])
    assert e3.key != e1.key and e3.stats["cache_hits"] == 0 and len(list((tmp_path / "embed_cache").glob("*.npz"))) == 2
    files[0].write_bytes(b"not a zip")  # a damaged cache is recomputed, with a warning
    e4 = Embedder(DedupConfig())
    with pytest.warns(UserWarning, match="unreadable"):
        v4 = e4.cached(texts[:4])
    assert e4.stats["texts"] == 4 and np.abs(v4 - v1[:4]).max() < 1e-5


def test_thread_governor_leaves_busy_cores_alone(monkeypatch):
    """threads = cores other processes leave free: system busy time minus ours, over the window."""
    import torch

    before = torch.get_num_threads()
    g = ThreadGovernor(max_threads=2)
    g.cores = 2
    clock = {"t": 0.0, "busy": 0.0, "ours": 0.0}
    monkeypatch.setattr(g, "_sample", lambda: (clock["t"], clock["busy"], clock["ours"]))
    try:
        for others, ours, want in ((1.0, 1.0, 1), (0.05, 1.9, 2), (1.6, 0.4, 1), (0.0, 1.0, 2)):
            g.reset()
            clock["t"] += 2.0  # a 2 s window in which other processes used `others` cores and we used `ours`
            clock["busy"] += 2.0 * (others + ours)
            clock["ours"] += 2.0 * ours
            assert g.update(force=True) == want
            assert g.history[-1] == (pytest.approx(others, abs=0.01), want)
        g.reset()
        clock["t"] += 0.05  # too short a window: keep the current setting
        assert g.update(force=True) == 2 and len(g.history) == 4
    finally:
        torch.set_num_threads(before)


def test_embedder_restores_torch_threads_after_a_call(real, monkeypatch):
    """The governor's thread choice is for the embedding only; a local LLM step after dedup starts afresh."""
    import torch

    _, tests = real
    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        e = Embedder(DedupConfig(embed_cache=False))
        e.load()

        def busy_machine(force=False):  # as if other processes held all but one core
            torch.set_num_threads(1)
            return 1

        monkeypatch.setattr(e.governor, "update", busy_machine)
        e([t.text for t in tests[:3]])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(outer)
