"""Writers that never destroy or mix their inputs, names that never become paths, secrets that are
never written, and odd input or text that ends in one line (issue #23 B, C9, D12, D13). One real
safety run on the tiny model is shared by the tests that need one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli
from filelock import FileLock

from safekey.cli.main import main
from safekey.paths import resource
from safekey.store import Failure, StageOutput, read_records
from safekey.types import SafekeyError

_run = run_cli


def _one_line_error(code: int, text: str, needle: str) -> None:
    assert code == 2, text
    errs = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and needle in errs[0] and "Traceback" not in text, text


@pytest.fixture(scope="module")
def safety_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("run")
    out = tmp / "run"
    main_args = ["eval", "safety", "--model", f"hf:{tiny_model_dir}", "--bench-file", str(resource("starter/heldout_harmful.jsonl")),
                 "--bench-file", str(resource("starter/heldout_benign.jsonl")), "--limit", "2", "--max-new-tokens", "4",
                 "--judge", "keyword", "--no-progress", "-o", str(out)]
    main(main_args)
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


# -- B6: output = input ---------------------------------------------------------------------------------------


def _data(tmp: Path, name: str = "x.jsonl") -> Path:
    p = tmp / name
    shutil.copyfile(resource("starter/train.jsonl"), p)
    return p


@pytest.mark.parametrize("argv", [
    ["data", "select", "{X}", "-o", "{X}"],
    ["data", "dedup", "{X}", "--tests", "{T}", "-o", "{X}"],
    ["data", "dedup", "{T}", "--tests", "{X}", "-o", "{X}"],
    ["data", "dedup", "{X}", "--tests", "{T}", "-o", "{T}"],
    ["data", "classify", "{X}", "-o", "{X}"],
    ["data", "reason", "{X}", "-o", "{X}"],
    ["data", "score", "{X}", "-o", "{X}"],
    ["data", "benign", "{X}", "-o", "{X}"],
    ["data", "benign-filter", "{X}", "-o", "{X}"],
    ["data", "select", "{X}", "-o", "{D}/x"],  # an input that is the output's side file (x.jsonl beside x)
    ["annotate", "{X}", "-o", "{X}"],
    ["train", "run", "{X}", "-o", "{D}"],  # the training folder would hold (and --overwrite clear) its data
    ["eval", "safety", "--model", "hf:/nonexistent", "--bench-file", "{X}", "-o", "{D}"],
    ["analyze", "kl", "{X}", "--model-a", "a=/nonexistent", "--model-b", "b=/nonexistent", "-o", "{X}"],
])
def test_output_that_is_an_input_is_refused(tmp_path, capsys, argv):
    x, t = _data(tmp_path), _data(tmp_path, "t.jsonl")
    before = x.read_bytes()
    args = [a.replace("{X}", str(x)).replace("{T}", str(t)).replace("{D}", str(tmp_path)) for a in argv]
    code, text = _run(args, capsys)
    assert code == 2, text
    assert ("also an input" in text or "would hold" in text or "side file" in text), text
    assert x.read_bytes() == before and t.read_bytes() == before


@pytest.mark.parametrize("argv", [
    ["report", "{R}", "-o", "{R}/summary.json"],
    ["report", "{R}", "--format", "csv", "-o", "{R}/run.json"],
    ["view", "{R}", "-o", "{R}/heldout_harmful/judged.jsonl"],
    ["analyze", "aha", "{R}", "-o", "{R}/summary.json"],
    ["eval", "rejudge", "{R}", "--judge", "keyword", "-o", "{R}/sub"],
])
def test_run_files_are_never_replaced(safety_run, tmp_path, capsys, argv):
    run = tmp_path / "run"
    shutil.copytree(safety_run, run)  # each case on its own copy: a failure must not spoil the others
    before = _snapshot(run)
    code, text = _run([a.replace("{R}", str(run)) for a in argv], capsys)
    assert code == 2, text
    assert _snapshot(run) == before


def test_report_and_view_may_replace_their_own_output_in_a_run_folder(safety_run, capsys):
    for argv in (["report", safety_run, "-o", safety_run / "report.html"], ["view", safety_run, "-o", safety_run / "view.html"]):
        for _ in range(2):  # the second time it replaces its own file
            code, text = _run(argv, capsys)
            assert code == 0, text
    (safety_run / "report.html").unlink()
    (safety_run / "view.html").unlink()


# -- B7: one writer per output -------------------------------------------------------------------------------


def test_two_trainings_into_one_folder(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "train"
    out.mkdir()
    with FileLock(str(out / ".train.lock")):  # held by the other training run
        code, text = _run(["train", "run", resource("starter/train.jsonl"), "--model", tiny_model_dir, "--limit", "2",
                           "-o", out], capsys)
    _one_line_error(code, text, "being written by another training run")
    assert not (out / "train_log.jsonl").exists()


@pytest.mark.parametrize("cmd", ["report", "view", "aha"])
def test_report_view_and_analyze_take_a_lock(safety_run, tmp_path, capsys, cmd):
    out = tmp_path / f"{cmd}.out"
    argv = {"report": ["report", safety_run, "-o", out], "view": ["view", safety_run, "-o", out],
            "aha": ["analyze", "aha", safety_run, "-o", out]}[cmd]
    with FileLock(str(out.with_name(f".{out.name}.lock"))):
        code, text = _run(argv, capsys)
    _one_line_error(code, text, "being written by another process")
    assert not out.exists()


# -- B8: names from input files are never paths ------------------------------------------------------------------


def _hostile_run(safety_run: Path, tmp_path: Path, name: str) -> Path:
    run = tmp_path / "hostile"
    shutil.copytree(safety_run, run)
    s = json.loads((run / "summary.json").read_text())
    s["benchmarks"] = {name: s["benchmarks"]["heldout_harmful"]}
    (run / "summary.json").write_text(json.dumps(s))
    return run


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs-escape", ".."])
def test_benchmark_names_from_a_summary_are_not_paths(safety_run, tmp_path, capsys, name):
    run = _hostile_run(safety_run, tmp_path, name)
    for argv in (["eval", "rejudge", run, "--judge", "keyword", "-o", tmp_path / "rj" / "out"],
                 ["analyze", "aha", run, "-o", tmp_path / "aha" / "aha.json"]):
        code, text = _run(argv, capsys)
        _one_line_error(code, text, "not a plain name")
    assert not (tmp_path / "escape").exists() and not Path("/tmp/abs-escape").exists()
    assert not (tmp_path / "rj" / "escape").exists()


def test_bench_file_named_dots_stays_inside_the_output(tmp_path, tiny_model_dir, capsys):
    from safekey.evals.safety_benchmarks import bench_file_name

    assert bench_file_name("...jsonl") == "custom" and bench_file_name("a/..jsonl") == "custom"
    assert bench_file_name(".hidden.jsonl") == "hidden.jsonl".removesuffix(".jsonl") or bench_file_name(".hidden.jsonl") == "hidden"
    odd = tmp_path / "...jsonl"
    odd.write_text('{"id": "a", "question": "Tell me a joke.", "unsafe": 0}\n')
    out = tmp_path / "o"
    code, text = _run(["eval", "safety", "--model", f"hf:{tiny_model_dir}", "--bench-file", odd, "--max-new-tokens", "2",
                       "--judge", "keyword", "--no-progress", "-o", out], capsys)
    assert code == 0, text
    assert (out / "custom" / "judged.jsonl").exists() and not (tmp_path / "generations.jsonl").exists()


def test_aha_writes_under_its_own_output_only(safety_run, tmp_path, capsys):
    before = _snapshot(safety_run)
    out = tmp_path / "a" / "aha.json"
    code, text = _run(["analyze", "aha", safety_run, "-o", out], capsys)
    assert code == 0, text
    assert _snapshot(safety_run) == before  # the eval run is only read
    assert json.loads(out.read_text())["kind"] == "analysis-aha"
    assert list((tmp_path / "a" / "aha.json.work").rglob("aha.uk.jsonl"))


def test_label_agreement_is_named_by_its_labels_and_refuses_conflicts(safety_run, tmp_path, capsys):
    ids = [json.loads(x)["id"] for x in (safety_run / "heldout_harmful" / "judged.jsonl").read_text().splitlines()]
    good = tmp_path / "gold.jsonl"
    good.write_text("".join(json.dumps({"id": i, "label": 1}) + "\n" for i in ids))
    code, text = _run(["eval", "agree", safety_run, "--labels", good], capsys)
    assert code == 0, text
    written = list(safety_run.glob("labels_agreement.gold-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["labels"] == str(good)
    written[0].unlink()
    conflict = tmp_path / "conflict.jsonl"
    conflict.write_text(json.dumps({"id": ids[0], "label": 1}) + "\n" + json.dumps({"id": ids[0], "label": 0}) + "\n")
    code, text = _run(["eval", "agree", safety_run, "--labels", conflict], capsys)
    _one_line_error(code, text, "labelled twice with different labels")
    for bad in ('{"id": "a", "label": "maybe"}\n', '[1, 2]\n', '{"label": 1, "id": null}\n', '{"id": "a"}\n', "{oops\n"):
        f = tmp_path / "bad.jsonl"
        f.write_text(bad)
        code, text = _run(["eval", "agree", safety_run, "--labels", f], capsys)
        assert code == 2 and "Traceback" not in text, (bad, text)
    assert not list(safety_run.glob("labels_agreement*"))


# -- C9: secrets --------------------------------------------------------------------------------------------------


def test_failure_reasons_are_redacted_but_model_text_is_not(tmp_path):
    so = StageOutput(tmp_path / "o.jsonl", stage="t", config={"base_url": "http://u:pw123@h/v1?key=KKK"})
    so.fail(Failure("1", "generation failed: 401 from http://u:pw123@h/v1?api_key=KKK (Authorization: Bearer tok-999)",
                    raw="the model wrote http://u:pw123@h/?key=KKK"))
    so.close()
    f = (tmp_path / "o.failures.jsonl").read_text()
    assert "pw123" not in f.split('"raw"')[0] and "KKK" not in f.split('"raw"')[0] and "tok-999" not in f
    assert "the model wrote http://u:pw123@h/?key=KKK" in f  # model text is data: kept as written
    meta = (tmp_path / "o.meta.json").read_text() + (tmp_path / "o.config.yaml").read_text()
    assert "pw123" not in meta and "KKK" not in meta


def test_doctor_never_prints_url_credentials(capsys):
    _, text = _run(["doctor", "--check", "openai:gpt-x", "--base-url", "http://alice:s3cr3tpw@127.0.0.1:9/v1?api_key=QQQ"],
                   capsys)
    assert "127.0.0.1:9" in text  # the check ran and named the endpoint
    assert "s3cr3tpw" not in text and "QQQ" not in text


def test_viewer_and_report_keep_model_text_verbatim(safety_run, tmp_path, capsys):
    run = tmp_path / "odd"
    shutil.copytree(safety_run, run)
    f = run / "heldout_harmful" / "judged.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    odd = 'Sure <!-- not a comment --> see http://bob:pw@x.io/?key=ABC" and </script> done'
    rows[0]["response"] = odd
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text = _run(["view", run, "-o", tmp_path / "v.html"], capsys)
    assert code == 0, text
    page = (tmp_path / "v.html").read_text()
    data = page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    items = json.loads(data.replace("<\\/", "</").replace("<\\!--", "<!--"))
    assert any(odd in (it["answer"], it["thinking"]) for it in items)
    assert len(items) == 4  # every item is shown


# -- D12: bad input is one line -----------------------------------------------------------------------------------


@pytest.mark.parametrize("line, why", [("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                       ('{"id": "a", "question": "q", "n": ' + "9" * 5000 + "}", "digits")])
def test_deep_json_and_huge_integers(tmp_path, capsys, line, why):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"id": "ok", "question": "fine"}) + "\n" + line + "\n")
    code, text = _run(["annotate", f, "-o", tmp_path / "o.jsonl", "--labeller", "heuristic"], capsys)
    _one_line_error(code, text, why)
    assert f"{f}:2" in text
    recs = list(read_records(f, skip_bad=True, rejects=tmp_path / "rej.jsonl"))
    assert [r.id for r in recs] == ["ok"] and why in (tmp_path / "rej.jsonl").read_text()
    j = tmp_path / "bad.json"
    j.write_text("[" + line + "]")
    with pytest.raises(SafekeyError, match="not readable JSON"):
        list(read_records(j))


def test_record_size_is_capped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAFEKEY_MAX_RECORD_MB", "1")
    f = tmp_path / "big.jsonl"
    f.write_text(json.dumps({"id": "big", "question": "x" * 2_000_000}) + "\n")
    code, text = _run(["annotate", f, "-o", tmp_path / "o.jsonl", "--labeller", "heuristic"], capsys)
    _one_line_error(code, text, "over the 1 MB cap (SAFEKEY_MAX_RECORD_MB)")


def test_folders_files_and_unwritable_outputs(tmp_path, capsys):
    data = _data(tmp_path)
    code, text = _run(["annotate", tmp_path, "-o", tmp_path / "o.jsonl"], capsys)
    assert code == 2 and "Traceback" not in text
    code, text = _run(["annotate", data, "-o", data / "o.jsonl", "--labeller", "heuristic"], capsys)  # parent is a file
    assert code == 2 and "Traceback" not in text and "error:" in text
    code, text = _run(["annotate", data, "-o", "/proc/self/safekey/o.jsonl", "--labeller", "heuristic"], capsys)
    assert code == 2 and "Traceback" not in text and "error:" in text
    code, text = _run(["data", "select", tmp_path, "-o", tmp_path / "s.jsonl"], capsys)
    assert code == 2 and "Traceback" not in text


# -- D13: the report and exports render whatever the runs hold ------------------------------------------------


def test_report_renders_a_run_whose_every_item_failed_and_odd_labels(safety_run, tmp_path, capsys):
    from safekey.evals.judge_scoring import aggregate

    run = tmp_path / "allfail"
    shutil.copytree(safety_run, run)
    s = json.loads((run / "summary.json").read_text())
    for b in s["benchmarks"]:
        (run / b / "judged.jsonl").write_text("")
        metrics, per_cat = aggregate([])
        s["benchmarks"][b].update(metrics=metrics, per_category=per_cat, judge_failures=2)
    s["label"] = r"$\foo$ \input{/etc/passwd} =HYPERLINK(1)"
    (run / "summary.json").write_text(json.dumps(s))
    other = tmp_path / "other"
    shutil.copytree(safety_run, other)
    s2 = json.loads((other / "summary.json").read_text())
    s2["label"] = r"=cmd|' /C calc'!A0 \write18{ls} #1 $x$ 50% a_b ^~"
    (other / "summary.json").write_text(json.dumps(s2))
    code, text = _run(["report", run, other, "-o", tmp_path / "r.html"], capsys)
    assert code == 0, text
    assert r"$\foo$ \input{/etc/passwd}" in (tmp_path / "r.html").read_text()
    code, text = _run(["report", run, "-o", tmp_path / "alone.html"], capsys)  # nothing judged anywhere
    assert code == 0, text
    assert "no judged items" in (tmp_path / "alone.html").read_text()
    code, latex = _run(["report", run, other, "--format", "latex"], capsys)
    assert code == 0, latex
    assert r"\input" not in latex and r"\write18" not in latex and r"\textbackslash{}input" in latex
    assert r"\#1" in latex and r"\$x\$" in latex and r"50\%" in latex
    code, csv_text = _run(["report", run, other, "--format", "csv"], capsys)
    assert code == 0, csv_text
    import csv
    import io

    cells = [c for row in csv.reader(io.StringIO(csv_text)) for c in row]
    assert not any(c[:1] in ("=", "+", "@") for c in cells)
    assert any(c.startswith("'=cmd") for c in cells)


def test_latex_and_csv_escaping_units():
    from safekey.report.paper_table import csv_cell, latex_escape

    assert latex_escape(r"\input{x}") == r"\textbackslash{}input\{x\}"
    assert latex_escape("a_b & 5% #1 $y$ ^ ~") == r"a\_b \& 5\% \#1 \$y\$ \textasciicircum{} \textasciitilde{}"
    assert [csv_cell(v) for v in ("=1+1", "+x", "-x", "@SUM", "ok", -0.5)] == ["'=1+1", "'+x", "'-x", "'@SUM", "ok", -0.5]


def test_log_lines_are_redacted(capsys):
    import logging

    from safekey.redact import redact_logging

    redact_logging()
    redact_logging()  # idempotent
    log = logging.getLogger("httpx-like")
    h = logging.StreamHandler()
    log.addHandler(h)
    try:
        log.warning("HTTP Request: POST %s %s", "http://alice:pw-9931@127.0.0.1:9/v1/chat?api_key=K-77", "500")
    finally:
        log.removeHandler(h)
    err = capsys.readouterr().err
    assert "pw-9931" not in err and "K-77" not in err and "http://***@127.0.0.1:9/v1/chat?api_key=***" in err
