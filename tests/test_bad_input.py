"""Careless and hostile input files (issue #15, items 7-16): one-line errors naming file:line or the
record id (exit 2), rejects counted under --skip-bad, nothing half-written, no silent resume of
changed input, no exit 0 when every item failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from safekey.evals.safety_benchmarks import load_bench_file
from safekey.store import Failure, read_records, require_unique_ids, run_stage
from safekey.types import Record, SafekeyError


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "safekey.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _write(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return path


def _ok(batch):
    return [r.model_copy(update={"done": True}) for r in batch]


def test_non_utf8_is_a_one_line_error_or_a_reject(tmp_path):
    f = _write(tmp_path / "in.jsonl", [{"id": "a", "question": "q"}, b'{"id": "b", "question": "caf\xe9"}'])
    with pytest.raises(SafekeyError, match=r"in.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        list(read_records(f))
    rej = tmp_path / "rej.jsonl"
    assert [r.id for r in read_records(f, skip_bad=True, rejects=rej)] == ["a"]
    assert "not valid UTF-8" in json.loads(rej.read_text())["error"]
    p = _cli("annotate", str(f), "-o", str(tmp_path / "out.jsonl"))
    assert p.returncode == 2 and "in.jsonl:2: not valid UTF-8" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("bad", [{"x": 1}, [1], 1.5, True, None, ""])
def test_ids_must_be_strings_or_integers(bad):
    with pytest.raises(ValueError, match="id must be a non-empty string or integer"):
        Record(id=bad)
    assert Record(id=7).id == "7"


def test_skip_bad_rejects_are_written_and_counted(tmp_path):
    f = _write(tmp_path / "in.jsonl", [{"id": "a", "question": "q"}, b"{not json", {"id": {"x": 1}, "question": "q"}])
    out = tmp_path / "o.jsonl"
    from safekey.store import sidecar

    st = run_stage(stage="t", inputs=read_records(f, skip_bad=True, rejects=sidecar(out, "rejects.jsonl")), out=out,
                   config={}, process=_ok)
    assert st["rejected"] == 2 and st["done"] == 1
    # select, which writes its output itself, keeps its rejects too
    from safekey.datamaking import select as sel

    sel_out = tmp_path / "sel.jsonl"
    st = sel.run(str(f), str(sel_out), sel.SelectConfig(n=1), skip_bad=True)
    assert st["inputs"] == 1 and st["selected"] == 0  # the one good record is not eligible (no scores)
    assert len((tmp_path / "sel.rejects.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "sel.stats.json").read_text())["rejected"] == 2


def test_duplicate_ids_are_refused_before_anything_is_written(tmp_path):
    f = _write(tmp_path / "in.jsonl", [{"id": "a", "question": "q"}, {"id": "a", "question": "other"}])
    recs = list(read_records(f))
    with pytest.raises(SafekeyError, match="record id a appears twice"):
        require_unique_ids(recs, f)
    out = tmp_path / "sel.jsonl"
    p = _cli("data", "select", str(f), "-o", str(out), "-n", "1")
    assert p.returncode == 2 and "appears twice" in p.stderr
    assert not out.exists() and not (tmp_path / "sel.meta.json").exists()
    s = _cli("train", "check-spans", str(f), "--model", "tiny-random")
    assert s.returncode == 2 and "appears twice" in s.stderr


@pytest.mark.parametrize(
    "item,msg",
    [({"id": "x", "question": "q", "unsafe": 1, "category": 7}, "'category' must be a string"),
     ({"id": "x", "question": "q", "unsafe": 1, "prefill": 5}, "'prefill' must be a string"),
     ({"id": "x", "messages": [{"role": "user"}], "unsafe": 1}, r"messages\[0\] must be"),
     ({"id": "x", "messages": "[not json", "unsafe": 1}, "'messages' is not valid JSON"),
     ({"id": "x", "messages": [["user", "hi"]], "unsafe": 1}, r"messages\[0\] must be"),
     ({"id": "x", "question": ["q"], "unsafe": 1}, "'question' must be a string")],
)
def test_bench_files_are_validated_on_load(tmp_path, item, msg):
    f = _write(tmp_path / "b.jsonl", [{"id": "ok", "question": "fine", "unsafe": 0}, item])
    with pytest.raises(SafekeyError, match=r"b.jsonl:2: .*" + msg):
        load_bench_file(f)


def test_empty_input_is_said_loudly(tmp_path, capsys):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    st = run_stage(stage="t", inputs=read_records(f), out=tmp_path / "o.jsonl", config={}, process=_ok)
    assert st["empty_input"] is True and "holds no records" in capsys.readouterr().err


def test_changed_input_does_not_silently_resume(tmp_path):
    f = _write(tmp_path / "in.jsonl", [{"id": str(i), "question": f"q{i}"} for i in range(4)])
    out = tmp_path / "o.jsonl"
    run_stage(stage="t", inputs=read_records(f), out=out, config={}, process=_ok)
    _write(f, [{"id": str(i), "question": f"q{i}" if i != 2 else "EDITED"} for i in range(4)])
    before = out.read_bytes()
    with pytest.raises(SafekeyError, match="input record 2 changed since it was processed"):
        run_stage(stage="t", inputs=read_records(f), out=out, config={}, process=_ok)
    assert out.read_bytes() == before
    # a grown input still resumes (new ids are work to do, old ones unchanged)
    _write(f, [{"id": str(i), "question": f"q{i}"} for i in range(6)])
    st = run_stage(stage="t", inputs=read_records(f), out=out, config={}, process=_ok)
    assert st["resumed"] == 4 and st["written_this_run"] == 2


def test_every_item_failed_is_not_exit_0(tmp_path):
    f = _write(tmp_path / "in.jsonl", [{"id": str(i), "question": "q"} for i in range(3)])
    with pytest.raises(SafekeyError, match=r"stage t: 3 of 3 items failed"):
        run_stage(stage="t", inputs=read_records(f), out=tmp_path / "o.jsonl", config={},
                  process=lambda b: [Failure(r.id, "llm: boom") for r in b])
    stats = json.loads((tmp_path / "o.stats.json").read_text())
    assert stats["failed"] == 3  # the stats are written before the refusal
    st = run_stage(stage="t", inputs=read_records(f), out=tmp_path / "o.jsonl", config={}, process=_ok)
    assert st["done"] == 3  # and a rerun retries them


def test_meta_and_stats_are_written_atomically(tmp_path, monkeypatch):
    """A kill between open and write of meta.json used to leave it empty (JSONDecodeError on resume)."""
    import safekey.store as store

    f = _write(tmp_path / "in.jsonl", [{"id": "a", "question": "q"}])
    out = tmp_path / "o.jsonl"
    run_stage(stage="t", inputs=read_records(f), out=out, config={}, process=_ok)
    real = os.replace

    def crash(src, dst):
        if str(dst).endswith("meta.json"):
            raise KeyboardInterrupt("killed mid-write")
        return real(src, dst)

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage="t", inputs=read_records(f), out=out, config={}, process=_ok)
    monkeypatch.setattr(store.os, "replace", real)
    assert json.loads((tmp_path / "o.meta.json").read_text())["stage"] == "t"  # the old one, whole
    assert run_stage(stage="t", inputs=read_records(f), out=out, config={}, process=_ok)["resumed"] == 1


def test_second_eval_into_a_busy_folder_does_not_touch_run_json(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")
    from filelock import FileLock

    from safekey.evals.safety import SafetyEvalConfig, run_safety_eval

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text('{"created": "then"}')
    with FileLock(str(tmp_path / "run" / ".run.lock")), pytest.raises(SafekeyError, match="being written by another safekey run"):
            run_safety_eval(SafetyEvalConfig(model="openai:x", benches=["xstest"], limit=1), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "run.json").read_text() == '{"created": "then"}'
