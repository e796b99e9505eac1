"""LLM layer throughput: HTTP concurrency against the local fake server, and hf batching.

    HF_HUB_OFFLINE=1 python benchmarks/llm_throughput.py                # full run (~1-2 min)
    HF_HUB_OFFLINE=1 python benchmarks/llm_throughput.py --no-hf --requests 200

HTTP: N requests to ``safekey.testing.fake_openai`` (its own process, so server and client do not
share a GIL) answering after a fixed latency; requests/s at each concurrency vs the ideal
concurrency / latency. Concurrency 1 runs fewer requests and extrapolates the time for N.
The client's CPU time per request is printed too: on a shared 2-core machine the client runs out
of CPU before it runs out of concurrency, and this column says so.

hf: SmolLM2-135M greedy generation of the same prompts one by one vs in one batch of 16
(tokens/s counts generated tokens).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from safekey.llm import ChatRequest, Sampling, get_backend


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_bench(n: int, latency: float, concurrencies: list[int], n_serial: int) -> list[dict]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "safekey.testing.fake_openai", "--port", str(port), "--latency", str(latency)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rows = []
    import psutil

    server = psutil.Process(proc.pid)
    try:
        assert "fake OpenAI server" in proc.stdout.readline()
        for conc in concurrencies:
            m = n_serial if conc == 1 else n
            be = get_backend("openai:fake-model", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="", cache=False,
                             concurrency=conc, timeout_s=30)
            be.generate([ChatRequest(messages=[{"role": "user", "content": "warm-up"}])])  # connect, import
            reqs = [ChatRequest(messages=[{"role": "user", "content": f"c{conc} r{i}"}], sampling=Sampling(max_tokens=16)) for i in range(m)]
            s0 = sum(server.cpu_times()[:2])
            c0, t0 = _cpu(), time.perf_counter()
            out = be.generate(reqs)
            dt, cpu = time.perf_counter() - t0, _cpu() - c0
            server_cpu = sum(server.cpu_times()[:2]) - s0
            ok = sum(o.ok for o in out)
            rps = m / dt
            ideal = conc / latency
            rows.append({"concurrency": conc, "requests": m, "ok": ok, "seconds": dt, "seconds_for_n": n / rps, "rps": rps,
                         "ideal": ideal, "ratio": rps / ideal, "cpu_ms": 1000 * cpu / m, "server_ms": 1000 * server_cpu / m, "load": os.getloadavg()[0]})
            print(f"  concurrency {conc}: {rps:.1f} req/s ({rps / ideal:.2f} of ideal)", file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain photosynthesis in detail.",
    "Describe the history of Rome.",
    "Give me a recipe for bread, step by step, with every detail you know.",
    "What are the benefits of exercise? Answer at length.",
    "Write a poem about the ocean.",
    "Explain how a computer works to a child.",
    "Describe your ideal city.",
]


def hf_bench(batch: int, max_tokens: int) -> dict:
    be = get_backend("hf:smollm2-135m", cache=False, batch_size=batch)
    reqs = [ChatRequest(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" (#{i})"}], sampling=Sampling(max_tokens=max_tokens))
            for i in range(batch)]
    be.generate(reqs[:1])  # load + warm up
    t0 = time.perf_counter()
    seq = [be.generate([r])[0] for r in reqs]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    bat = be.generate(reqs)
    t_bat = time.perf_counter() - t0
    tok_seq = sum(c.completion_tokens or 0 for c in seq)
    tok_bat = sum(c.completion_tokens or 0 for c in bat)
    same = sum(a.text == b.text for a, b in zip(seq, bat))
    return {"batch": batch, "tok_seq": tok_seq, "t_seq": t_seq, "tps_seq": tok_seq / t_seq, "tok_bat": tok_bat, "t_bat": t_bat,
            "tps_bat": tok_bat / t_bat, "speedup": (tok_bat / t_bat) / (tok_seq / t_seq), "same": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--serial-requests", type=int, default=50, help="requests at concurrency 1 (extrapolated)")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--hf-max-tokens", type=int, default=32)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (1 avoids OpenMP spinning on a busy CPU)")
    a = ap.parse_args()
    if a.torch_threads:
        import torch

        torch.set_num_threads(a.torch_threads)

    rows = http_bench(a.requests, a.latency, [int(c) for c in a.concurrency.split(",")], a.serial_requests)
    print(f"\n### OpenAI-compatible backend vs local fake server ({a.latency * 1000:.0f} ms latency, {a.requests} requests, "
          f"{os.cpu_count()} CPU cores)\n")
    print("| concurrency | requests sent | req/s | ideal req/s | ratio to ideal | time for 1,000 | CPU ms/req client + server | load avg |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        sent = f"{r['requests']}" + (" (extrapolated)" if r["requests"] != a.requests else "")
        print(f"| {r['concurrency']} | {sent} | {r['rps']:.1f} | {r['ideal']:.0f} | {r['ratio']:.2f} | {r['seconds_for_n']:.1f} s | "
              f"{r['cpu_ms']:.1f} + {r['server_ms']:.1f} | {r['load']:.1f} |")
    bad = [r for r in rows if r["ok"] != r["requests"]]
    if bad:
        print(f"\nWARNING: failed requests at concurrency {[r['concurrency'] for r in bad]}")

    if not a.no_hf:
        h = hf_bench(a.hf_batch, a.hf_max_tokens)
        import torch

        print(f"\n### hf backend, SmolLM2-135M, greedy, {a.hf_max_tokens} new tokens, CPU, {torch.get_num_threads()} torch thread(s), "
              f"load avg {os.getloadavg()[0]:.1f}\n")
        print("| mode | generated tokens | seconds | tokens/s |")
        print("|---|---:|---:|---:|")
        print(f"| sequential (1 × {h['batch']}) | {h['tok_seq']} | {h['t_seq']:.1f} | {h['tps_seq']:.1f} |")
        print(f"| batched ({h['batch']}) | {h['tok_bat']} | {h['t_bat']:.1f} | {h['tps_bat']:.1f} |")
        print(f"\nbatched / sequential: **{h['speedup']:.1f}×**; identical texts: {h['same']}/{h['batch']}")


if __name__ == "__main__":
    main()
