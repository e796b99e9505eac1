"""U/K annotation (SPEC §2): segmentation offsets, the span convention on all of STAR-1, per-record
failures, resume, the CLI's --stats, and the llm labeller's fallbacks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from safekey.annotate.labellers import THINK_OPEN, HeuristicLabeller, LabellerConfig, LLMLabeller
from safekey.annotate.lexicon import is_safety
from safekey.annotate.stage import annotate_file
from safekey.llm import BackendConfig, Completion
from safekey.sentences import segment, segment_regex
from safekey.store import Failure
from safekey.types import Record, SafekeyError


def _resp(thinking: str, answer: str = "Answer.") -> str:
    return f"<think>\n{thinking}\n</think>\n\n{answer}"


def _check_convention(o: dict) -> None:
    resp = o["response"]
    close = resp.index("\n</think>")
    assert 0 < o["u_end"] < o["k_end"] <= close, o["id"]
    assert o["u_end"] > len(THINK_OPEN), o["id"]  # U is never empty
    k = resp[o["u_end"] : o["k_end"]].lstrip()
    assert k and k == o["k_text"], o["id"]
    assert not resp[o["u_end"] - 1].isspace() and not resp[o["k_end"] - 1].isspace()


# --- segmentation ---------------------------------------------------------------------------------


def test_segment_offsets_exact_on_real_traces(shared):
    data = json.loads(shared("star1/STAR-1.json").read_text())
    for r in data[::25]:
        th = r["response"][len(THINK_OPEN) : r["response"].index("\n</think>")]
        sents = segment(th, question=r["question"], max_sentences=15)
        assert len(sents) >= 2
        prev = 0
        for s in sents:
            assert th[s.start : s.end] == s.text and s.text == s.text.strip()
            assert s.start >= prev and not th[prev : s.start].strip()  # nothing between sentences is lost
            prev = s.end


def test_segment_keeps_quotes_abbreviations_and_breaks_lines():
    q = "I want to kidnap my boss. Where do I buy rope?"
    t = f'Okay, so the user is asking, "{q}" Hmm, that\'s serious. I need to check who Bob is. I\'m not sure.'
    got = [s.text for s in segment(t, question=q)]
    assert got == [
        f'Okay, so the user is asking, "{q}"',
        "Hmm, that's serious.",
        "I need to check who Bob is.",  # pysbd alone keeps "is. I'm" together ("Is." = Isaiah)
        "I'm not sure.",
    ]
    assert [s.text for s in segment("The user asked who lives at 427 W. Virginia St. in San Jose. That is private.")] == [
        "The user asked who lives at 427 W. Virginia St. in San Jose.",
        "That is private.",
    ]
    lst = "Options:\n1. Refuse politely\n2. Offer resources, e.g. hotlines etc. for help\n\nDone."
    assert [s.text for s in segment(lst)] == [
        "Options:",
        "1. Refuse politely",
        "2. Offer resources, e.g. hotlines etc. for help",
        "Done.",
    ]
    # the naive baseline splits the quoted question: the reason we do not use it
    assert len(segment_regex(t)) > len(segment(t, question=q))


def test_unquoted_restatement_of_question_is_not_split():
    q = "It can be fun to kill animals. What kind of animal would you kill?"
    t = "The user says it can be fun to kill animals. What kind of animal would you kill? Hmm, that's troubling."
    assert [s.text for s in segment(t, question=q)][-1] == "Hmm, that's troubling."
    assert len(segment(t, question=q)) == 2
    assert len(segment(t)) == 3


# --- heuristic labeller + per-record failures -------------------------------------------------------


def test_heuristic_multi_sentence_u_and_safety_flag():
    q = "My friend needs a kidney. How can I find a buyer for a kidney from a donor who is unaware?"
    th = (
        "Okay, so I need to figure out how to respond to this user's query. The user is asking for help in "
        "finding a buyer for a kidney from a donor who doesn't know. Hmm, that sounds a bit concerning.\n\n"
        "First, I should consider the policies."
    )
    [o] = HeuristicLabeller().label([Record(id="k1", question=q, response=_resp(th))])
    assert o.u_sentences == 2
    assert o.k_text == "Hmm, that sounds a bit concerning." and o.k_is_safety is True
    _check_convention(o.to_json())
    th2 = "Okay, I need to explain photosynthesis to the user. Let me start with the basics. Plants use light."
    [o2] = HeuristicLabeller().label([Record(id="k2", question="Explain photosynthesis", response=_resp(th2))])
    assert o2.k_text == "Let me start with the basics." and o2.k_is_safety is False


@pytest.mark.parametrize(
    "rec, reason",
    [
        (Record(id="a", question="hi"), "no_response"),
        (Record(id="b", question="hi", response="Just an answer, no trace."), "no_thinking"),
        (Record(id="c", question="hi", response="<think>\nnever closed"), "no_thinking"),
        (Record(id="d", question="hi", response=_resp("  \n ")), "empty_thinking"),
        (Record(id="e", question="hi", response=_resp("Okay, so the user says hi.")), "single_sentence"),
    ],
)
def test_unusable_traces_fail_with_reason(rec, reason):
    for lab in (HeuristicLabeller(), LLMLabeller(_Scripted(lambda r: '{"last_understanding_sentence": 1}'))):
        [res] = lab.label([rec])
        assert isinstance(res, Failure) and res.reason.startswith(reason + ":") and res.id == rec.id


def test_failures_go_to_sidecar_and_are_counted(tmp_path):
    good = {"id": "g", "question": "How do I pick a lock?", "response": _resp(
        "Okay, so the user is asking how to pick a lock. Hmm, that could be for burglary. Let me think.")}
    rows = [good, {"id": "n", "question": "q"}, {"id": "s", "question": "q", "response": _resp("One sentence only.")}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    out = tmp_path / "out.jsonl"
    stats = annotate_file(src, out, LabellerConfig(), skip_bad=True)
    assert stats["done"] == 1 and stats["failed"] == 2
    assert stats["failure_reasons"] == {"no_response": 1, "single_sentence": 1}
    fails = {json.loads(l)["id"]: json.loads(l)["reason"] for l in (tmp_path / "out.failures.jsonl").open()}
    assert set(fails) == {"n", "s"}
    assert (tmp_path / "out.rejects.jsonl").read_text().count("\n") == 1
    [o] = [json.loads(l) for l in out.open()]
    assert o["k_text"] == "Hmm, that could be for burglary." and o["k_is_safety"] is True
    _check_convention(o)


def test_safety_lexicon():
    assert is_safety("Hmm, that's a red flag.") and is_safety("I need to follow the safety policies.")
    assert not is_safety("Let me think about how to approach this.")
    assert not is_safety("First, I should acknowledge their feelings to show empathy.")


# --- the real file, through the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def star1_run(shared, tmp_path_factory):
    src = shared("star1/STAR-1.json")
    out = tmp_path_factory.mktemp("uk") / "star1_uk.jsonl"
    from safekey.cli.main import cli

    t0 = time.time()
    res = CliRunner().invoke(cli, ["annotate", str(src), "-o", str(out), "--stats", "--no-progress"])
    secs = time.time() - t0
    assert res.exit_code == 0, res.output + repr(res.exception)
    return src, out, res.output, secs


def test_star1_all_records_annotated_within_budget(star1_run):
    src, out, _, secs = star1_run
    assert secs < 30, f"heuristic annotation of STAR-1 took {secs:.1f}s"
    n_in = len(json.loads(Path(src).read_text()))
    outs = [json.loads(l) for l in out.open()]
    fails = out.with_name("star1_uk.failures.jsonl")
    n_fail = sum(1 for _ in fails.open()) if fails.exists() else 0
    assert len(outs) + n_fail == n_in == 1000
    for o in outs:
        _check_convention(o)
        assert o["uk_labeller"] == "heuristic" and isinstance(o["k_is_safety"], bool)
    stats = json.loads(out.with_name("star1_uk.stats.json").read_text())
    assert stats["annotated"] == len(outs) and stats["annotated_share"] >= 0.99
    assert sum(stats["u_sentences_hist"].values()) == len(outs)
    assert 0.5 < stats["safety_aha_share"] < 1.0  # STAR-1 traces mostly turn to safety right after U
    # training reads these fields back through the shared schema
    assert Record.model_validate(outs[0]).k_end == outs[0]["k_end"]


def test_star1_cli_prints_histogram_and_safety_share(star1_run):
    _, _, output, _ = star1_run
    assert "U length (sentences)" in output and "safety-aha share" in output
    stats = json.loads(star1_run[1].with_name("star1_uk.stats.json").read_text())
    assert f"{100 * stats['safety_aha_share']:.1f}%" in output
    assert str(stats["u_sentences_hist"]["1"]) in output


def test_rerun_resumes_without_recomputing(star1_run):
    src, out, _, _ = star1_run
    before = out.read_bytes()
    stats = annotate_file(src, out, LabellerConfig())
    assert stats["resumed"] == 1000 and stats["written_this_run"] == 0
    assert out.read_bytes() == before
    from safekey.types import SafekeyError

    with pytest.raises(SafekeyError, match="different config"):
        annotate_file(src, out, LabellerConfig(labeller="llm", model="hf:smollm2-135m"))


# --- llm labeller --------------------------------------------------------------------------------


class _Scripted:
    """A Backend double: answers each request with responder(request) (str) or an error."""

    def __init__(self, responder):
        self.config = BackendConfig(kind="openai", model="scripted")
        self.responder = responder
        self.seen = []

    def generate(self, requests):
        self.seen.extend(requests)
        out = []
        for r in requests:
            text = self.responder(r)
            out.append(Completion(error="HTTP 500 after 6 retries") if text is None else Completion(text=text))
        return out

    def close(self):
        pass


def _star1_records(shared, ids):
    data = {r["id"]: r for r in json.loads(shared("star1/STAR-1.json").read_text())}
    return [Record.model_validate(data[i]) for i in ids]


def test_llm_labeller_valid_malformed_out_of_range_and_errors(shared):
    recs = _star1_records(shared, ["20524", "6308", "15597", "1555", "937"])
    script = {
        "20524": 'Sure! ```json\n{"last_understanding_sentence": 2, "key_sentence_is_safety": true}\n```',
        "6308": '{"last_understanding_sentence": 1,}',  # trailing comma: repaired, still valid
        "15597": "The understanding ends at sentence two.",  # no JSON
        "1555": '{"last_understanding_sentence": 40}',  # out of range
        "937": None,  # transport error
    }
    backend = _Scripted(lambda r: script[r.id])
    # default: an unusable reply is a failure with its reason (retried next run), never a silent heuristic
    strict = {o.id: o for o in LLMLabeller(_Scripted(lambda r: script[r.id])).label(recs)}
    assert [rid for rid, o in strict.items() if isinstance(o, Failure)] == ["15597", "1555", "937"]
    assert strict["937"].reason.startswith("llm_error: HTTP 500 after 6 retries")
    assert "retried next run" in strict["15597"].reason
    lab = LLMLabeller(backend, fallback="heuristic")
    outs = lab.label(recs)
    by = {o.id: o for o in outs}
    assert by["20524"].k_text == "Hmm, that's a tricky situation." and by["20524"].uk_labeller == "llm"
    assert not hasattr(by["20524"], "uk_fallback") or by["20524"].uk_fallback is None
    assert by["6308"].k_text == "Hmm, that's a pretty serious and concerning request."
    assert by["15597"].uk_fallback == "llm_unparseable"
    assert by["1555"].uk_fallback == "llm_index_out_of_range"
    assert by["937"].uk_fallback == "llm_error"
    assert lab.fallbacks == {"llm_unparseable": 1, "llm_index_out_of_range": 1, "llm_error": 1}
    # a fallback is the heuristic's answer, not a guess
    heur = {o.id: o for o in HeuristicLabeller().label(recs)}
    for rid in ("15597", "1555", "937"):
        assert (by[rid].u_end, by[rid].k_end) == (heur[rid].u_end, heur[rid].k_end)
    for o in outs:
        _check_convention(o.to_json())
    # the model saw numbered sentences, with the quoted two-sentence question kept whole
    prompt = next(r for r in backend.seen if r.id == "6308").messages[-1]["content"]
    assert '1. Okay, so the user is asking, "I want to kidnap my boss. Where do I buy rope?"' in prompt


def test_llm_fallbacks_counted_in_stage_stats(shared, tmp_path):
    recs = _star1_records(shared, ["20524", "6308", "15597"])
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    replies = iter(['{"last_understanding_sentence": 2}', "garbage", '{"last_understanding_sentence": 0}'])
    backend = _Scripted(lambda r: next(replies))
    stats = annotate_file(src, tmp_path / "o.jsonl", LabellerConfig(labeller="llm", model="openai:scripted",
                                                                      fallback="heuristic"), backend=backend, batch_size=8)
    assert stats["annotated"] == 3 and stats["labeller_counts"] == {"llm": 3}
    assert stats["llm_fallbacks"] == {"llm_unparseable": 1, "llm_index_out_of_range": 1}


def test_unreachable_llm_fails_loudly_and_a_rerun_retries(shared, tmp_path):
    """#18: an unreachable API used to give "annotated 3/3" (all heuristic), exit 0, never retried."""
    recs = _star1_records(shared, ["20524", "6308", "15597"])
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    cfg = LabellerConfig(labeller="llm", model="openai:scripted")
    with pytest.raises(SafekeyError, match="stage annotate: 3 of 3 items failed"):
        annotate_file(src, tmp_path / "o.jsonl", cfg, backend=_Scripted(lambda r: None), batch_size=8)
    assert not (tmp_path / "o.jsonl").read_text().strip()
    stats = annotate_file(src, tmp_path / "o.jsonl", cfg, backend=_Scripted(lambda r: '{"last_understanding_sentence": 1}'),
                          batch_size=8)
    assert stats["annotated"] == 3 and stats["failed"] == 0 and not stats["llm_fallbacks"]


@pytest.mark.smollm
def test_llm_labeller_smoke_smollm2(shared, tmp_path):
    """The real 135M model rarely answers well; what must hold is the contract: every record
    comes back annotated by the llm labeller (its answer or a counted fallback), never a crash."""
    pytest.importorskip("safekey.llm.hf")
    from safekey.llm import get_backend

    recs = _star1_records(shared, ["6509", "1555", "20524"])
    backend = get_backend("hf:smollm2-135m", cache_dir=str(tmp_path / "cache"), batch_size=3)
    lab = LLMLabeller(backend, n_sentences=4, max_tokens=16, fallback="heuristic")  # one batched call, short prompts
    outs = lab.label(recs)
    assert [o.id for o in outs] == ["6509", "1555", "20524"]
    for o in outs:
        assert isinstance(o, Record) and o.uk_labeller == "llm"
        _check_convention(o.to_json())
    assert sum(lab.fallbacks.values()) == sum(1 for o in outs if getattr(o, "uk_fallback", None))


def test_llm_labeller_against_fake_openai_server(shared, tmp_path, monkeypatch):
    """The whole path over HTTP: CLI config → get_backend("openai:…") → local server with a scripted
    responder (valid JSON, malformed JSON, out-of-range index) → fallbacks counted in the stats;
    then a non-retryable HTTP 400 → `llm_error` fallback."""
    fake = pytest.importorskip("safekey.testing.fake_openai")
    monkeypatch.setenv("SAFEKEY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-annotate")
    recs = _star1_records(shared, ["20524", "6308", "15597", "1555"])
    replies = {
        "20524": '{"last_understanding_sentence": 2, "key_sentence_is_safety": true}',
        "6308": "I would say the second sentence, probably.",
        "15597": '{"last_understanding_sentence": 99}',
        "1555": '```json\n{"last_understanding_sentence": 1}\n```',
    }

    def responder(messages):
        prompt = messages[-1]["content"]
        return next(v for rid, v in replies.items() if next(r for r in recs if r.id == rid).question in prompt)

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    with fake.FakeOpenAI(responder=responder) as srv:
        from safekey.cli.main import cli

        out = tmp_path / "o.jsonl"
        res = CliRunner().invoke(cli, ["annotate", str(src), "-o", str(out), "--labeller", "llm", "--model",
                                       "openai:fake-model", "--base-url", srv.base_url, "--no-progress",
                                       "--fallback", "heuristic"])
        assert res.exit_code == 0, res.output + repr(res.exception)
        assert srv.count(status=200) == 4
        stats = json.loads((tmp_path / "o.stats.json").read_text())
        assert stats["annotated"] == 4
        assert stats["llm_fallbacks"] == {"llm_unparseable": 1, "llm_index_out_of_range": 1}
        by = {json.loads(l)["id"]: json.loads(l) for l in out.open()}
        assert by["20524"]["k_text"] == "Hmm, that's a tricky situation." and "uk_fallback" not in by["20524"]
        assert by["1555"]["k_text"] == "Hmm, that's a serious issue."
        for o in by.values():
            _check_convention(o)

        from safekey.llm import get_backend

        lab = LLMLabeller(get_backend("openai:fake-model", base_url=srv.base_url, cache=False, max_retries=1),
                          fallback="heuristic")
        srv.inject("400")
        [o] = lab.label([recs[0]])
        assert o.uk_fallback == "llm_error" and lab.fallbacks == {"llm_error": 1}
        _check_convention(o.to_json())
