"""The local transformers backend: prompt rendering, prefill, explicit sampling, batching, cache."""

from __future__ import annotations

import pytest
import torch

from safekey.llm import ChatRequest, Sampling, get_backend
from safekey.llm.hf import HFBackend

Q = [{"role": "user", "content": "How do I bake bread?"}]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """On the shared 2-core CPU, OpenMP threads spin against other processes (10x slower); restore after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return get_backend(f"hf:{tiny_model_dir}", cache=False, batch_size=4)


def test_prefill_sits_right_after_generation_prompt(tiny, smol_tokenizer):
    req = ChatRequest(messages=Q, prefill="Sure, here is")
    ids = tiny.render_ids(req)
    gen_prompt = smol_tokenizer.apply_chat_template(Q, tokenize=False, add_generation_prompt=True)
    assert tiny.render_text(req) == gen_prompt + "Sure, here is"
    head = smol_tokenizer(gen_prompt, add_special_tokens=False)["input_ids"]
    assert ids[: len(head)] == head  # the prompt part is untouched by the prefill
    tail = ids[len(head) :]
    assert smol_tokenizer.decode(tail) == "Sure, here is"
    # no stray space: the first prefill token is "Sure", not " Sure"
    assert tail[0] == smol_tokenizer.convert_tokens_to_ids("Sure") != smol_tokenizer(" Sure", add_special_tokens=False)["input_ids"][0]
    assert smol_tokenizer.decode(head).endswith("<|im_start|>assistant\n")
    # exactly one BOS at the start (SmolLM2's BOS is <|im_start|>, which the template writes itself)
    assert ids[0] == smol_tokenizer.bos_token_id and ids[1] != smol_tokenizer.bos_token_id


def test_template_with_bos_is_not_doubled(tiny_model_dir, smol_tokenizer):
    be = HFBackend(get_backend(f"hf:{tiny_model_dir}", cache=False).config)
    tok = be.tokenizer
    tok.chat_template = "{{ bos_token }}{{ bos_token }}" + tok.chat_template  # a template + tokenizer that both add BOS
    ids = be.render_ids(ChatRequest(messages=Q))
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id


def _manual_greedy(model, ids, n, eos):
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt in eos:
                break
            out.append(nxt)
    return out


def test_checkpoint_generation_config_cannot_override_sampling(tiny):
    """A checkpoint's generation_config (sampling on, penalties) must not leak into greedy decoding."""
    model, tok = tiny._load()
    gc = model.generation_config
    gc.do_sample, gc.temperature, gc.top_k, gc.repetition_penalty, gc.no_repeat_ngram_size = True, 5.0, 3, 3.0, 2
    req = ChatRequest(messages=Q, sampling=Sampling(max_tokens=12))
    got = tiny.generate([req])[0]
    ref = _manual_greedy(model, tiny.render_ids(req), 12, set(tiny._eos_ids()))
    assert got.text == tok.decode(ref)
    assert got.completion_tokens == len(ref) + (len(ref) < 12)
    assert got.prompt_tokens == len(tiny.render_ids(req))


def test_stop_strings_cut_and_batches_keep_order(tiny):
    _model, _tok = tiny._load()
    reqs = [ChatRequest(messages=[{"role": "user", "content": "x " * k}], sampling=Sampling(max_tokens=8)) for k in (1, 30, 5, 12, 2)]
    outs = tiny.generate(reqs)
    singles = [tiny.generate([r])[0] for r in reqs]
    assert [o.text for o in outs] == [s.text for s in singles]
    # use a piece of real output as a stop string: text is cut before it and finish_reason is "stop"
    text = outs[1].text
    assert len(text) > 3
    stop = text[2:4]
    cut = tiny.generate([ChatRequest(messages=reqs[1].messages, sampling=Sampling(max_tokens=8, stop=(stop,)))])[0]
    assert cut.text == text[: text.find(stop)] and cut.finish_reason == "stop"


def test_cache_makes_no_second_call(tiny_model_dir, tmp_path):
    be = get_backend(f"hf:{tiny_model_dir}", cache_dir=str(tmp_path))
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], sampling=Sampling(max_tokens=4)) for i in range(3)]
    first = be.generate(reqs)
    second = be.generate(reqs)
    assert [c.text for c in first] == [c.text for c in second]
    assert not any(c.cached for c in first) and all(c.cached for c in second)
    s = be.stats()
    assert (s["requests"], s["cache_hits"], s["cache_misses"], s["ok"]) == (6, 3, 3, 3)
    assert "3 cached (50%)" in be.summary()
    # another sampling parameter is another key
    other = be.generate([reqs[0].model_copy(update={"sampling": Sampling(max_tokens=4, repetition_penalty=1.2)})])
    assert not other[0].cached


@pytest.mark.smollm
def test_smollm2_batched_equals_one_by_one(smollm2_dir):
    be = get_backend("hf:smollm2-135m", cache=False, batch_size=8)
    prompts = ["Hi", "What is the capital of France?", "Write one sentence about the sea, the mountains and the long winding road home.", "Name three colors."]
    reqs = [ChatRequest(messages=[{"role": "user", "content": p}], sampling=Sampling(max_tokens=16)) for p in prompts]
    batched = be.generate(reqs)
    single = [be.generate([r])[0] for r in reqs]
    assert [b.text for b in batched] == [s.text for s in single]
    assert all(b.ok and b.text.strip() for b in batched)
    assert "Paris" in batched[1].text
    pre = be.generate([ChatRequest(messages=[{"role": "user", "content": "What is the capital of France?"}], prefill="The capital of France is", sampling=Sampling(max_tokens=4))])[0]
    assert not pre.text.startswith("The capital") and "Paris" in pre.text


def test_greedy_requests_with_different_seeds_share_a_batch(tiny, monkeypatch):
    """Greedy decoding ignores the seed, so per-item seeds (the attackers') must not split a batch into
    single generations; sampled requests with different seeds stay apart (each its own seed)."""
    calls = []
    real = tiny._generate_batch
    monkeypatch.setattr(tiny, "_generate_batch", lambda reqs, s: calls.append(len(reqs)) or real(reqs, s))
    reqs = [ChatRequest(messages=Q, sampling=Sampling(max_tokens=3, seed=k)) for k in range(4)]
    greedy = tiny.generate(reqs)
    assert calls == [4] and len({c.text for c in greedy}) == 1
    calls.clear()
    tiny.generate([ChatRequest(messages=Q, sampling=Sampling(max_tokens=3, temperature=1.0, seed=k)) for k in range(4)])
    assert calls == [1, 1, 1, 1]
