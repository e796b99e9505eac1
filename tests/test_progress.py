"""Progress people can read (#18): bars named by benchmark and step, tokens/s and a token ETA when
the results carry completion_tokens, warnings on their own line (never glued to a bar). The data
pipeline's time per step is checked in test_data_pipeline.py."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r'''
import logging, sys
from safekey.store import run_stage
from safekey.types import Record
log = logging.getLogger("safekey.llm.core")
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
def process(batch):
    if batch[0].id == "r2":
        log.warning("backend: 1 of 2 requests failed (kept as failures, retried next run)")
    return [Record(id=r.id, question=r.question, completion_tokens=40) for r in batch]
recs = [Record(id=f"r{i}", question="q") for i in range(6)]
run_stage(stage="safety-generate", inputs=recs, out=sys.argv[1], config={}, process=process, batch_size=2,
          progress=True, label="strongreject: generate")
'''


def test_bar_label_tokens_and_warning_on_its_own_line(tmp_path):
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out.jsonl")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # a terminal shows the last \r-segment of each line; a warning must begin its own line
    lines = p.stderr.split("\n")
    warn = [line for line in lines if "requests failed" in line]
    assert len(warn) == 1
    shown = warn[0].split("\r")[-1]
    assert shown.startswith("WARNING backend: 1 of 2"), repr(warn[0])
    assert "strongreject: generate" in p.stderr
    final = p.stderr.replace("\n", "\r").split("\r")
    last_bar = [s for s in final if "strongreject: generate" in s][-1]
    assert "6/6" in last_bar and "240 tok" in last_bar and "tok/s" in last_bar and "ETA 0:00" in last_bar
