"""Every attack once on the real SmolLM2-135M (CPU, offline): one row per attack, the keyword judge.

What it shows: the solvers run end to end on a real model through `safekey eval safety --attack`,
what each costs in target queries and generated tokens, and how a 135M attacker behaves (it rarely
writes the JSON an attacker must reply with: those turns are counted as attacker refusals, and an
item whose attacker never produced a prompt is reported as not attacked, outside the ASR). It is a
smoke test, not a measurement of attack strength: that needs a real attacker (e.g. an
OpenAI-compatible endpoint). The adaptive attacks' budgets are CUT here (PAIR 2 streams × 2
iterations, TAP 2/2/2, Crescendo 2 turns / 1 backtrack, a greedy attacker with one JSON retry; the
papers' defaults are 20 × 3, 4/10/10, 10/10, sampled, 5 retries) and the answers are 48 tokens long:
the table says so.
Usage: python benchmarks/attacks_smoke.py [OUT]   (~10 minutes on 2 cores)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safekey.paths import resource

ATTACKS = "none,prefill-answer,prefill-thinking,cot-hijack,pair,tap,crescendo"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="attacks-smoke-")) / "run"
    cfg = out.parent / "attacks.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    # greedy attacker calls batch across items; one JSON retry (the papers: sampled, 5 retries)
    attacker = {"attacker": "hf:smollm2-135m", "attacker_max_tokens": 96, "attacker_temperature": 0.0}
    tries = {"attacker_retries": 1}
    cfg.write_text(json.dumps({"attack_settings": {"pair": {**attacker, **tries, "streams": 2, "iterations": 2},
                                                   "tap": {**attacker, **tries, "branching": 2, "width": 2, "depth": 2},
                                                   "crescendo": {**attacker, "max_turns": 2, "max_backtracks": 1}}}))
    t0 = time.time()
    cmd = [sys.executable, "-m", "safekey.cli.main", "eval", "safety", "--model", "hf:smollm2-135m", "--bench-file",
           str(resource("starter/heldout_harmful.jsonl")), "--limit", "6", "--max-new-tokens", "48", "--attack", ATTACKS,
           "--config", str(cfg), "--no-progress", "-o", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    s = json.loads((out / "summary.json").read_text())
    print(f"SmolLM2-135M, 6 held-out harmful prompts, greedy, 48 new tokens, keyword judge, budgets CUT (PAIR 2x2, "
          f"TAP 2/2/2, Crescendo 2/1; greedy attacker, 1 JSON retry); {time.time() - t0:.0f} s")
    print("| attack | ASR, answers (n) | ASR, unclosed thinking judged too (n) | not attacked | target queries | "
          "tokens generated | attacker refusals |")
    print("|---|---|---|---|---|---|---|")

    def pct(m: dict | None) -> str:
        return f"{m['rate'] * 100:.1f}% [{m['ci'][0] * 100:.1f}, {m['ci'][1] * 100:.1f}] ({m['n']})" if m else "— (0)"

    for name, b in s["benchmarks"].items():
        attack = b.get("attack", "none")
        m = b["metrics"]
        gens = [json.loads(x) for x in (out / name / "generations.jsonl").read_text().splitlines()]
        st = b.get("attack_stats") or {}
        print(f"| {attack} | {pct(m.get('harmful_rate'))} | {pct(m.get('harmful_rate_full', m.get('harmful_rate')))} | "
              f"{(b.get('unjudged') or {}).get('not_attacked', 0)} | {st.get('target_queries', len(gens))} | "
              f"{sum(int(g.get('completion_tokens') or 0) for g in gens)} (final answers) | "
              f"{st.get('attacker_refusals', '—')} of {st.get('attacker_calls', '—')} |")


if __name__ == "__main__":
    main()
