"""The demo orchestration and the HTML report, built from small real runs made here (tiny model:
eval → 2-step SFT and SafeKey training → eval → annotate → probe → report), rendered in headless
Chromium when it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
from click.testing import CliRunner

from safekey.cli.main import cli
from safekey.demo import markdown_table, run_demo
from safekey.paths import resource
from safekey.report.build import _segments, pick_examples
from safekey.report.collect import collect
from safekey.store import read_records

BENCHES = ("heldout_harmful", "heldout_jailbreak", "heldout_benign")


def _sets(model: str) -> list[str]:
    # the demo preset, smaller: 4 records, batch 2, 1 epoch = 2 optimizer steps per training run; 2 items per held-out file
    return [f"model={model}", "train.limit=4", "train.epochs=1", "safety.limit=2", "safety.max_new_tokens=6",
            "safety.batch_size=8"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("demo")
    log: list[str] = []
    res = run_demo(out, _sets(str(tiny_model_dir)), echo=log.append)
    # one analysis, in-process, so the report has an analysis section from a real run too
    r = CliRunner().invoke(cli, ["analyze", "probe", str(resource("starter/heldout_traces.jsonl")), "--model",
                                 f"safekey={out / 'train' / 'safekey'}", "--limit", "8", "--folds", "2",
                                 "-o", str(out / "analysis" / "probe.json")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["report", str(out), "-o", str(out / "report.html"), "--title", "test report"])
    assert r.exit_code == 0, r.output
    return out, res, log


def test_demo_end_to_end_and_resume(demo_dir, tiny_model_dir):
    out, res, _log = demo_dir
    assert [r["model"] for r in res["table"]] == ["base", "sft", "safekey"]
    for row in res["table"]:
        for key in ("harmful", "jailbreak", "over_refusal"):
            m = row[key]
            assert m["n"] == 2 and 0.0 <= m["ci"][0] <= m["rate"] <= m["ci"][1] <= 1.0
    for mode in ("sft", "safekey"):
        rows = [json.loads(x) for x in (out / "train" / mode / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
    # SafeKey's extra losses are logged (active in the last epoch); plain SFT's stay zero
    sk = [json.loads(x) for x in (out / "train" / "safekey" / "train_log.jsonl").read_text().splitlines()]
    assert any(r["qmm_loss"] > 0 and r["head_loss"] > 0 for r in sk)
    for run in ("base", "sft", "safekey"):
        for b in BENCHES:
            assert (out / "eval" / run / b / "judged.jsonl").exists()
            assert (out / "eval" / run / b / "judged.uk.jsonl").exists()
    assert "| + SafeKey" in markdown_table(res["table"])
    # a rerun skips every finished step
    log2: list[str] = []
    t = time.time()
    run_demo(out, _sets(str(tiny_model_dir)), echo=log2.append)
    assert time.time() - t < 30
    # every step but the (always rebuilt) report is skipped on a rerun
    resumed = [m for m in (re.match(r"resuming: (\d+) of (\d+) steps already done", x) for x in log2) if m]
    assert resumed and int(resumed[0][2]) - int(resumed[0][1]) == 1, log2
    assert not any("train-" in x or "eval-" in x for x in log2 if x.startswith("[")), log2


def test_collect_orders_and_labels_runs(demo_dir):
    out, _, _ = demo_dir
    col = collect([out])
    assert [e.label for e in col.evals] == ["base", "sft", "safekey"]
    assert sorted(t.label for t in col.trains) == ["safekey", "sft"]
    assert [a.kind for a in col.analyses] == ["analysis-aha", "analysis-probe"]  # aha: the preset runs it
    ex = pick_examples(col.evals, per_bench=1)
    assert len(ex) == len(BENCHES)
    assert all([c["label"] for c in e["cells"]] == ["base", "sft", "safekey"] for e in ex)


def test_report_is_self_contained_with_plots_and_tables(demo_dir):
    out, _, _ = demo_dir
    page = (out / "report.html").read_text()
    for anchor in ('id="safety-table"', 'id="train-table"', 'id="runs-table"', 'class="analysis-table"',
                   'id="plot-safety"', 'id="plot-categories"', 'id="plot-training"', 'class="plot analysis-plot"'):
        assert anchor in page, anchor
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r'(src|href)="(https?:)?//', page), "report must not load anything from the network"
    for b in BENCHES:
        assert b in page
    # the rates printed in the table are the summary's
    summ = json.loads((out / "eval" / "base" / "summary.json").read_text())
    r = summ["benchmarks"]["heldout_harmful"]["metrics"]["harmful_rate"]
    assert f"{r['rate'] * 100:.1f}% [{r['ci'][0] * 100:.1f}, {r['ci'][1] * 100:.1f}]" in page


def test_report_shows_only_the_losses_a_run_has_in_plain_words(demo_dir, tmp_path):
    out, _, _ = demo_dir
    from safekey.report import build_report

    def train_header(page):
        return re.search(r'<table id="train-table">\s*<tr>(.*?)</tr>', page, re.S).group(1)

    full = (out / "report.html").read_text()
    assert "query-mask loss (on K)" in train_header(full) and "safety-head loss" in train_header(full)
    sft_only = build_report([out / "train" / "sft", out / "eval" / "base"], tmp_path / "sft.html").read_text()
    head = train_header(sft_only)
    assert "language-model loss" in head and "query-mask" not in head and "safety-head" not in head
    assert "qmm_loss" not in head and "lm_loss" not in head
    assert "harmful compliance" in full and "<small>harmful_rate" not in full


def test_key_sentence_highlight_segments():
    rec = next(iter(read_records(resource("starter/heldout_traces.jsonl"))))
    segs = _segments(rec.response, rec.u_end, rec.k_end)
    assert "".join(t for _, t in segs) == rec.response
    assert dict((c, t) for c, t in segs if c)["k"].strip() == rec.k_text
    assert [c for c, _ in _segments(rec.response, None, None)] == [""]


def test_report_cli_on_nothing(tmp_path):
    r = CliRunner().invoke(cli, ["report", str(tmp_path), "-o", str(tmp_path / "r.html")], standalone_mode=False)
    assert r.exception is not None and "nothing to report" in str(r.exception)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def test_report_renders_in_headless_chromium(demo_dir, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (make test installs it with apt-get when it can); render check skipped")
    out, _, _ = demo_dir
    page = (out / "report.html").read_text()
    # after load, record how many images actually decoded (naturalWidth > 0) and how many tables exist
    probe = ("<script>window.addEventListener('load', () => { const ok = [...document.images]"
             ".filter(i => i.complete && i.naturalWidth > 0).length; document.body.setAttribute('data-imgs-ok', ok);"
             " document.body.setAttribute('data-tables', document.querySelectorAll('table').length); });</script>")
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-imgs-ok="(\d+)"', dom.stdout)
    assert m, "the page's load handler did not run"
    assert int(m.group(1)) == 4, "every embedded plot must decode"
    assert int(re.search(r'data-tables="(\d+)"', dom.stdout).group(1)) >= 5
    shot = tmp_path / "report.png"
    r = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,3000", (out / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    import matplotlib.image as mpimg

    px = mpimg.imread(str(shot))
    assert px.shape[:2] == (3000, 1280)
    assert px[..., :3].std() > 0.05, "screenshot is blank"
