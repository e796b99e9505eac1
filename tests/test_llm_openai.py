"""The OpenAI-compatible backend against a real local HTTP server with injected faults."""

from __future__ import annotations

import collections
import json
import logging
import time

import pytest
from pydantic import BaseModel

from safekey.llm import ChatRequest, ParseFailure, Sampling, get_backend, parse_json
from safekey.store import Failure
from safekey.testing import FakeOpenAI
from safekey.types import SafekeyError

KEY_ENV = "SAFEKEY_TEST_OPENAI_KEY"
KEY = "sk-test-fake-0123456789"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def backend(srv: FakeOpenAI, tmp_path, **kw):
    opts = dict(base_url=srv.base_url, api_key_env=KEY_ENV, cache_dir=str(tmp_path / "cache"), timeout_s=2.0,
                retry_initial_s=0.02, retry_max_s=0.1, concurrency=16)
    opts.update(kw)
    return get_backend("openai:fake-model", **opts)


def req(text: str, **sampling) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], sampling=Sampling(**sampling), id=text)


def test_round_trip_and_wire_format(tmp_path):
    seen = []

    def responder(messages, body):
        seen.append(body)
        return "Paris is the capital." if "France" in messages[-1]["content"] else "ok"

    with FakeOpenAI(responder=responder, api_key=KEY) as srv:
        be = backend(srv, tmp_path, cache=False)
        out = be.generate([
            req("Capital of France?", max_tokens=7, temperature=0.6, top_p=0.7, seed=3),
            req("Count to five", stop=("3",), repetition_penalty=1.2),
            ChatRequest(messages=[{"role": "user", "content": "hi"}], prefill="Sure,"),
        ])
    assert [o.text for o in out] == ["Paris is the capital.", "ok", "ok"]
    assert all(o.ok and o.finish_reason == "stop" and o.prompt_tokens and not o.cached for o in out)
    b0, b1, b2 = seen_sorted(seen)
    assert (b0["temperature"], b0["top_p"], b0["max_tokens"], b0["seed"]) == (0.6, 0.7, 7, 3)
    assert "repetition_penalty" not in b0  # only sent when != 1.0, so plain OpenAI accepts the default
    assert b1["repetition_penalty"] == 1.2 and b1["stop"] == ["3"]
    assert b2["messages"][-1] == {"role": "assistant", "content": "Sure,"}
    assert b2["continue_final_message"] is True and b2["add_generation_prompt"] is False


def seen_sorted(bodies):
    by = {b["messages"][0]["content"]: b for b in bodies}
    return by["Capital of France?"], by["Count to five"], by["hi"]


def test_deepseek_prefill_and_reasoning_content(tmp_path):
    with FakeOpenAI(api_key=KEY) as srv:
        be = backend(srv, tmp_path, prefill_style="deepseek", cache=False)
        assert be.request_body(ChatRequest(messages=[{"role": "user", "content": "q"}], prefill="<think>\n"))["messages"][-1] == {
            "role": "assistant", "content": "<think>\n", "prefix": True}
        none = backend(srv, tmp_path, prefill_style="none", cache=False)
        out = none.generate([ChatRequest(messages=[{"role": "user", "content": "q"}], prefill="Sure")])[0]
        assert not out.ok and "prefill" in out.error and srv.count() == 0  # never sent


def test_azure_routing_and_auth_header(tmp_path):
    with FakeOpenAI(api_key=KEY) as srv:
        root = srv.base_url.removesuffix("/v1")
        be = backend(srv, tmp_path, base_url=root, api_version="2024-10-21", cache=False)
        assert be.generate([req("azure")])[0].text == "azure"
        (e,) = srv.entries()
        assert e.path.startswith("/openai/deployments/fake-model/chat/completions?api-version=2024-10-21")


def test_500_requests_with_30_percent_faults(tmp_path):
    """Every item finishes or fails with a reason; a rerun sends only the failed ones; nothing twice."""
    prompts = [f"item-{i:03d}" for i in range(500)]
    # slow answers arrive after 2.5 s: past the 1 s read timeout and the 2 s request deadline even on a loaded CPU
    with FakeOpenAI(api_key=KEY, fault_rate=0.3, seed=7, retry_after=0.05, slow_s=2.5) as srv:
        be = backend(srv, tmp_path, max_retries=1, timeout_s=1.0, concurrency=64)
        first = be.generate([req(p) for p in prompts])
        assert len(first) == 500
        failed = [p for p, c in zip(prompts, first) if not c.ok]
        for p, c in zip(prompts, first):
            assert (c.ok and c.text == p) or (not c.ok and c.error and c.text == "")
        assert 10 < len(failed) < 200, len(failed)  # ~0.3² of 500 = 45 fail twice (more on a loaded CPU)
        reasons = collections.Counter(c.error.split(":")[1].strip().split(" ")[0] for c in first if not c.ok)
        assert reasons and all(c.error.startswith("gave up after 2 attempts") for c in first if not c.ok), reasons
        # a stage records them as failures with their reason
        fails = [c.as_failure(p) for p, c in zip(prompts, first) if not c.ok]
        assert all(isinstance(f, Failure) and f.reason == "llm: " + c.error for f, c in zip(fails, [c for c in first if not c.ok]))
        with pytest.raises(ValueError):
            next(c for c in first if c.ok).as_failure("x")
        assert be.stats()["errors"] == len(failed) and be.stats()["ok"] == 500 - len(failed)

        delivered = collections.Counter(e.last_user for e in srv.entries(status=200, fault=None))
        assert set(delivered) == set(prompts) - set(failed) and set(delivered.values()) == {1}

        n_before = srv.count()
        srv.fault_rate = 0.0
        second = be.generate([req(p) for p in prompts])
        assert all(c.ok and c.text == p for p, c in zip(prompts, second))
        assert srv.count() - n_before == len(failed)  # only the failed ones were sent again
        assert sum(c.cached for c in second) == 500 - len(failed)

        third = be.generate([req(p) for p in prompts])
        assert all(c.cached for c in third) and srv.count() - n_before == len(failed)
    delivered = collections.Counter(e.last_user for e in srv.entries(status=200, fault=None))
    assert set(delivered) == set(prompts) and set(delivered.values()) == {1}


def test_auth_error_is_clear_and_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-42")
    with FakeOpenAI(api_key=KEY) as srv:
        be = backend(srv, tmp_path, concurrency=1, max_retries=5)
        with pytest.raises(SafekeyError) as ei:
            be.generate([req(f"q{i}") for i in range(5)])
        assert srv.count() == 1 and srv.count(status=401) == 1  # one attempt, the batch stops
    msg = str(ei.value)
    assert "authentication failed (HTTP 401)" in msg and KEY_ENV in msg
    assert "sk-wrong-key-42" not in msg and "***" in msg  # the server echoed the key; we scrubbed it


def test_missing_key_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with FakeOpenAI() as srv:
        with pytest.raises(SafekeyError, match=KEY_ENV):
            backend(srv, tmp_path).generate([req("x")])
        assert srv.count() == 0


def test_client_error_not_retried(tmp_path):
    with FakeOpenAI(api_key=KEY) as srv:
        srv.inject("400")
        out = backend(srv, tmp_path, cache=False, max_retries=4).generate([req("x")])[0]
        assert not out.ok and out.error.startswith("HTTP 400") and srv.count() == 1


def test_retry_after_is_honoured(tmp_path):
    with FakeOpenAI(api_key=KEY, retry_after=0.8) as srv:
        srv.inject("429")
        be = backend(srv, tmp_path, cache=False, retry_initial_s=0.01, retry_max_s=0.02)
        out = be.generate([req("wait for me")])[0]
        assert out.ok and out.text == "wait for me"
        first, second = srv.entries()
        assert first.status == 429 and second.status == 200
        gap = second.time - first.time
        assert 0.8 <= gap < 1.3, gap  # the backoff alone would have been ~0.01-0.03 s
        assert be.stats()["retries"] == 1


@pytest.mark.parametrize("fault", ["drop", "slow", "nonjson", "badjson", "500", "503", "429"])
def test_each_fault_is_retried(tmp_path, fault):
    with FakeOpenAI(api_key=KEY, retry_after=0.01, slow_s=0.5) as srv:
        srv.inject(fault, 2)
        out = backend(srv, tmp_path, cache=False, timeout_s=0.25, max_retries=2).generate([req("x")])[0]
        assert out.ok and out.text == "x", out.error
        assert [e.fault for e in srv.entries()][:2] == [fault, fault]
    # and when retries run out, the reason is kept
    with FakeOpenAI(api_key=KEY, retry_after=0.01, slow_s=0.5) as srv:
        srv.inject(fault, 3)
        out = backend(srv, tmp_path, cache=False, timeout_s=0.25, max_retries=1).generate([req("x")])[0]
        assert not out.ok and out.error.startswith("gave up after 2 attempts")


def test_concurrency_is_bounded_and_used(tmp_path):
    with FakeOpenAI(api_key=KEY, latency=0.15) as srv:
        be = backend(srv, tmp_path, cache=False, concurrency=8)
        t0 = time.perf_counter()
        out = be.generate([req(f"c{i}") for i in range(32)])
        dt = time.perf_counter() - t0
        assert all(o.ok for o in out)
        assert srv.max_in_flight == 8
    assert dt < 32 / 8 * 0.15 * 2.5  # ~0.6 s ideal; sequential would be 4.8 s


def test_requests_per_minute_limit(tmp_path):
    with FakeOpenAI(api_key=KEY) as srv:
        be = backend(srv, tmp_path, cache=False, concurrency=32, requests_per_minute=600)  # 10/s
        t0 = time.perf_counter()
        out = be.generate([req(f"r{i}") for i in range(30)])
        dt = time.perf_counter() - t0
    assert all(o.ok for o in out)
    assert 1.6 <= dt < 4.0, dt  # a one-second bucket (10) then 10/s for the other 20


def test_tokens_per_minute_limit(tmp_path):
    """A minute's token budget may go at once; after it, requests are let through at budget/60 per second."""
    with FakeOpenAI(api_key=KEY) as srv:
        be = backend(srv, tmp_path, cache=False, concurrency=32, tokens_per_minute=3000)  # 50 tokens/s
        t0 = time.perf_counter()
        # each request is estimated at 1 prompt token (4 chars) + 100 max tokens = 101
        out = be.generate([req(f"t{i:03d}", max_tokens=100) for i in range(31)])
        dt = time.perf_counter() - t0
        times = sorted(e.time for e in srv.log if e.path.endswith("/chat/completions"))
    assert all(o.ok for o in out) and len(times) == 31
    assert times[28] - times[0] < 1.0  # 29 x 101 = 2,929 tokens fit the first minute's budget
    # the bucket drains at 50 tokens/s: the 30th waits ~0.6 s for room (2,929 + 101 > 3,000), the 31st ~2 s more,
    # ~2.6 s after the first (measured from the first: on a loaded machine the server logs the burst's tail late)
    assert times[30] - times[0] > 2.0
    assert 2.0 <= dt < 8.0, dt


def test_garbage_text_becomes_parse_failure_for_judges(tmp_path):
    class Verdict(BaseModel):
        score: int

    with FakeOpenAI(responder=lambda m: 'Verdict:\n```json\n{"score": 4,}\n```', api_key=KEY) as srv:
        srv.inject("garbage")
        be = backend(srv, tmp_path, cache=False, concurrency=1)
        a, b = be.generate([req("judge 1"), req("judge 2")])
    assert a.ok and isinstance(parse_json(a.text, Verdict), ParseFailure)  # transport fine, content garbage
    assert parse_json(b.text, Verdict) == Verdict(score=4)


def test_cache_key_covers_every_sampling_param_and_prefill(tmp_path):
    with FakeOpenAI(api_key=KEY) as srv:
        be = backend(srv, tmp_path)
        base = req("same")
        variants = [base] + [base.model_copy(update={"sampling": Sampling(**{k: v})}) for k, v in
                             [("temperature", 0.5), ("top_p", 0.9), ("max_tokens", 9), ("repetition_penalty", 1.1), ("stop", ("x",)), ("seed", 1)]]
        variants.append(base.model_copy(update={"prefill": "Sure"}))
        be.generate(variants)
        assert srv.count() == len(variants)
        again = be.generate(variants)
        assert all(c.cached for c in again) and srv.count() == len(variants)
        # N identical sampled requests in one batch are N samples, not one
        sampled = [req("sample", temperature=1.0)] * 3
        be.generate(sampled)
        assert srv.count() == len(variants) + 3
        assert all(c.cached for c in be.generate(sampled))
        # cache=False bypasses
        be.generate([base], cache=False)
        assert srv.count() == len(variants) + 4
    s = be.stats()
    assert s["cache_hits"] == len(variants) + 3 and s["requests"] == 2 * len(variants) + 6 + 1


def test_retries_are_logged_with_their_reason(tmp_path, caplog):
    with FakeOpenAI(api_key=KEY) as srv, caplog.at_level(logging.DEBUG, logger="safekey.llm"):
        srv.inject("500")
        backend(srv, tmp_path, cache=False).generate([req("x")])
    assert any("attempt 1 failed (HTTP 500" in r.getMessage() for r in caplog.records)


def test_server_cli_and_models_endpoint(tmp_path):
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "safekey.testing.fake_openai", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}/v1" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            assert json.load(r)["data"][0]["id"] == "fake-model"
        out = get_backend("openai:fake-model", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="", cache=False).generate([req("via cli")])
        assert out[0].text == "via cli"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
