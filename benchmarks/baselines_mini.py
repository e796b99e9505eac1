"""The 2026 baseline table in miniature (issue #29), one command:

    python benchmarks/baselines_mini.py [--out runs/baselines-mini] [--quick]

base, SFT, SafeKey, intervened DPO and SFT → GRPO (± RECAP prefills) on the embedded SmolLM2, 3 seeds,
the same starter prompts for every method, evaluated on StrongREJECT plain / under a prefilled
thought / in jailbreak wrappers, XSTest (over-refusal) and a MATH-500 slice, harmful reasoning
judged beside harmful answers. It is the `baselines-mini` preset of `safekey run` (resumable) with
the decontamination check up front and the variants × seeds table after (the same machinery as
benchmarks/replicate_mini.py). `--quick`: 1 seed, 8 records, 10 prompts per benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicate_mini import main

QUICK = ["seeds=[1]", "train.limit=8", "safety.limit='strongreject=10,strongreject-jailbreak=10,xstest=10,strongreject@pair=4'", "safety.max_new_tokens=32", "reasoning.limit=3",
         "reasoning.max_new_tokens=64", "pairs.limit=8"]

if __name__ == "__main__":
    sys.exit(main("baselines-mini", QUICK, __doc__))
