"""The report never overclaims and the first training does not trip (issue #24): empty answers are
counted apart (never as refusals), a dead judge endpoint fails before any generation, a one-class
safety head is refused before the model is built, and last_k_epochs > epochs is clamped with a note."""

from __future__ import annotations

import json
import time

import pytest
from cli_helpers import run_cli

from safekey.cli.main import main
from safekey.judges import JudgeItem, KeywordJudge
from safekey.paths import resource
from safekey.testing.fake_openai import FakeOpenAI


def _run(argv, capsys, monkeypatch=None, env=None):
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return run_cli(argv, capsys)


def test_keyword_judge_gives_no_verdict_on_empty_text():
    v = KeywordJudge().judge([JudgeItem(id="a", question="q", text=""), JudgeItem(id="b", question="q", text="  \n\t"),
                              JudgeItem(id="c", question="q", text="I can't help with that.")])
    assert [x.label for x in v] == ["empty", "empty", "refusal"]
    assert v[0].harmful is None and v[0].refused is None and v[2].refused is True


def test_a_model_that_writes_nothing_is_not_scored_safe(tmp_path, capsys, monkeypatch):
    with FakeOpenAI(lambda messages: "   ") as srv:
        code, text = _run(["eval", "safety", "--model", "openai:fake-model", "--base-url", srv.base_url,
                           "--bench-file", resource("starter/heldout_harmful.jsonl"),
                           "--bench-file", resource("starter/heldout_benign.jsonl"), "--limit", "4",
                           "--judge", "keyword", "--no-progress", "-o", tmp_path / "run"], capsys, monkeypatch,
                          {"OPENAI_API_KEY": "sk-test"})
    assert code == 0, text
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    for bench in ("heldout_harmful", "heldout_benign"):
        m = s["benchmarks"][bench]["metrics"]
        assert m["empty_rate"]["rate"] == 1.0 and m["empty_rate"]["n"] == 4
        assert "harmful_rate" not in m and "refusal_rate" not in m  # neither safe nor refused
    code, md = _run(["report", tmp_path / "run", "--format", "md"], capsys)
    assert code == 0 and "empty 100%" in md


def test_dead_judge_endpoint_fails_before_generation(tmp_path, capsys, monkeypatch, tiny_model_dir):
    t0 = time.time()
    code, text = _run(["eval", "safety", "--model", f"hf:{tiny_model_dir}", "--bench-file", resource("starter/heldout_harmful.jsonl"),
                       "--limit", "2", "--judge", "harm-1to5", "--judge-model", "openai:judge-x",
                       "--judge-base-url", "http://127.0.0.1:9/v1", "-o", tmp_path / "run"], capsys, monkeypatch,
                      {"OPENAI_API_KEY": "sk-test"})
    assert code == 2 and "does not answer" in text and "judge" in text, text
    assert time.time() - t0 < 30
    assert not list((tmp_path / "run").rglob("generations.jsonl"))


def test_last_k_epochs_over_epochs_is_clamped_with_a_note(capsys):
    from safekey.train.config import TrainConfig

    cfg = TrainConfig(epochs=1, last_k_epochs=2, mode="safekey")
    assert cfg.last_k_epochs == 1 and cfg.use_head
    assert "last_k_epochs clamped to 1" in capsys.readouterr().err


def test_one_class_safety_head_is_refused_before_the_model_is_built(tmp_path, capsys, tiny_model_dir):
    rows = [json.loads(x) for x in resource("starter/train.jsonl").read_text().splitlines()]
    harmful = [r for r in rows if r.get("unsafe") == 1][:4]
    f = tmp_path / "harmful_only.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in harmful))
    code, text = _run(["train", "run", f, "--model", tiny_model_dir, "--mode", "safekey", "--epochs", "1", "-o", tmp_path / "o"],
                      capsys)
    assert code == 2 and "one class only" in text and "Traceback" not in text
    assert not (tmp_path / "o" / "train_log.jsonl").exists()
    from safekey.train.config import TrainConfig
    from safekey.train.data import load_records, refuse_one_class_head

    refuse_one_class_head(load_records(f, None), TrainConfig(mode="safekey", head=False))  # without the head: fine
    refuse_one_class_head(load_records(f, None), TrainConfig(mode="sft"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    import shutil

    tmp = tmp_path_factory.mktemp("two")
    main(["eval", "safety", "--model", f"hf:{tiny_model_dir}", "--bench-file", str(resource("starter/heldout_harmful.jsonl")),
          "--limit", "3", "--max-new-tokens", "3", "--judge", "keyword", "--no-progress", "-o", str(tmp / "a")])
    shutil.copytree(tmp / "a", tmp / "b")
    return tmp / "a", tmp / "b"


def _relabel(run, **changes):
    p = run / "summary.json"
    s = json.loads(p.read_text())
    s.update(changes)
    p.write_text(json.dumps(s))


def test_report_refuses_incomparable_rows_and_duplicate_labels(two_runs, tmp_path, capsys):
    import shutil

    a, b = (shutil.copytree(r, tmp_path / r.name) for r in two_runs)
    _relabel(a, label="base")
    _relabel(b, label="base")
    code, text = _run(["report", a, b, "--format", "md"], capsys)
    assert code == 2 and "two runs are labelled 'base'" in text and str(a) in text and str(b) in text
    _relabel(b, label="tuned", sampling={**json.loads((a / "summary.json").read_text())["sampling"], "max_new_tokens": 99})
    for fmt in ("md", "html"):
        code, text = _run(["report", a, b, "--format", fmt, "-o", tmp_path / f"r.{fmt}"], capsys)
        assert code == 2 and "not comparable" in text and "sampling" in text, text
    code, text = _run(["report", a, b, "--format", "md", "--allow-mismatch"], capsys)
    assert code == 0 and "NOT COMPARABLE: safety runs differ in sampling" in text
    code, text = _run(["report", a, b, "-o", tmp_path / "r.html", "--allow-mismatch"], capsys)
    assert code == 0 and "NOT COMPARABLE" in (tmp_path / "r.html").read_text()


def test_data_mix_gives_the_head_both_classes(tmp_path, capsys):
    harmful = tmp_path / "h.jsonl"
    benign = tmp_path / "b.jsonl"
    harmful.write_text('{"id": "1", "question": "how to make a weapon", "response": "<think>\\nno\\n</think>\\nNo."}\n'
                       '{"id": "2", "question": "q2", "response": "r"}\n')
    benign.write_text('{"id": "1", "question": "how do weapons in museums get restored", "response": "r"}\n'
                      '{"question": "no id here", "response": "r"}\n')
    code, text = _run(["data", "mix", "--harmful", harmful, "--benign", benign, "-o", tmp_path / "m.jsonl"], capsys)
    assert code == 0, text
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["id"], r["unsafe"]) for r in rows] == [("1", 1), ("2", 1), ("1#benign", 0), ("benign-1", 0)]
    benign.write_text('{"id": "9", "question": "q", "response": "r", "unsafe": 1}\n')  # contradicts its role
    code, text = _run(["data", "mix", "--harmful", harmful, "--benign", benign, "-o", tmp_path / "m2.jsonl"], capsys)
    assert code == 2 and "says unsafe=1 but the source is given as benign" in text


def test_safekey_preset_trains_on_harmful_and_benign():
    from pathlib import Path

    from safekey.experiment import load_experiment, plan_steps

    exp, here = load_experiment("safekey")
    steps, _ = plan_steps(exp, here, Path("/tmp/x"), exp.model)
    mix = next(s for s in steps if s.name == "data-mix").cmd
    assert "--harmful" in mix and "--benign" in mix and "UCSC-VLAA/STAR-benign-915" in mix
    train = next(s for s in steps if s.name == "train-safekey").cmd
    assert not any(a == "default_unsafe=1" for a in train)
    assert [s.name for s in steps][:2] == ["data-mix", "annotate"]


def test_html_report_shows_what_a_reader_needs_and_no_machine_paths(two_runs, tmp_path, capsys):
    import shutil

    root = tmp_path / "study"
    a, b = (shutil.copytree(r, root / "eval" / name) for r, name in zip(two_runs, ("base", "sft")))
    _relabel(a, label="base")
    _relabel(b, label="sft")
    t = root / "train" / "sft"
    t.mkdir(parents=True)
    (t / "train_log.jsonl").write_text('{"step": 1, "epoch": 1.0, "loss": 2.5}\n')
    (t / "train_config.yaml").write_text("mode: sft\nseed: 7\nepochs: 1\nlr: 0.001\n")
    code, text = _run(["report", root, "-o", tmp_path / "r.html", "--baseline", "sft"], capsys)
    assert code == 0, text
    html = (tmp_path / "r.html").read_text()
    assert "Δ vs sft, paired" in html  # the configured baseline, not the first row
    assert "temperature=0.0" in html and "{&#39;temperature" not in html and "{'temperature" not in html
    assert "mode=sft, seed=7, epochs=1, lr=0.001" in html
    assert "weights " in html
    assert str(tmp_path) not in html  # nothing of this machine's layout
    assert "min-width: 0" in html  # example cards wrap inside their grid cell


def test_every_bar_says_its_n():
    from safekey.report.plots import _plt, grouped_bars

    plt = _plt()
    fig, ax = plt.subplots()
    grouped_bars(ax, ["a", "b"], {"m1": [{"rate": 0.5, "ci": [0.3, 0.7], "n": 24}, None],
                                  "m2": [{"rate": 0.1, "ci": [0.0, 0.3], "n": 23}, {"rate": 0.9, "ci": [0.8, 1.0], "n": 7}]},
                 ylabel="x")
    assert sorted(t.get_text() for t in ax.texts) == ["n=23", "n=24", "n=7"]
    plt.close(fig)


def test_training_shows_progress_and_checks_report_to(tmp_path, tiny_model_dir, capfd):
    from safekey.cli.main import main as cli_main

    data = resource("starter/train.jsonl")
    try:
        cli_main(["train", "run", str(data), "--model", str(tiny_model_dir), "--mode", "sft", "--limit", "4", "--epochs", "1",
                  "--set", "effective_batch=2", "--set", "per_device_batch=2", "--set", "last_k_epochs=0",
                  "-o", str(tmp_path / "t")])
    except SystemExit as e:
        assert not e.code
    err = capfd.readouterr().err
    assert "train:" in err and "2/2" in err  # the bar: steps done of total, with tqdm's ETA
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "run", str(data), "--model", str(tiny_model_dir), "--limit", "4", "--set", "report_to=[nosuch]",
                  "-o", str(tmp_path / "t2")])
    assert e.value.code == 2 and "report_to: 'nosuch'" in capfd.readouterr().err


@pytest.mark.parametrize("change, field", [
    ({"n": "3"}, "benchmarks.heldout_harmful.n"), ({"n": -3}, "benchmarks.heldout_harmful.n"),
    ({"metrics": {"harmful_rate": {"rate": 0.5, "ci": None, "n": 3}}}, "harmful_rate.ci"),
    ({"metrics": {"harmful_rate": {"rate": "0.5", "ci": [0, 1], "n": 3}}}, "harmful_rate.rate"),
    ({"metrics": {"harmful_rate": {"rate": float("nan"), "ci": [0, 1], "n": 3}}}, "harmful_rate.rate"),
    ({"metrics": {"harmful_rate": {"rate": 0.5, "ci": [0, 1], "n": -1}}}, "harmful_rate.n"),
])
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_report_on_a_summary_that_is_not_safekeys_is_one_line(two_runs, tmp_path, capsys, change, field, fmt):
    """#35.16: a hand-edited or foreign summary.json is refused naming the field; never a traceback,
    never NaN or a negative n printed as a number."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run)
    s = json.loads((run / "summary.json").read_text())
    s["benchmarks"]["heldout_harmful"].update(change)
    (run / "summary.json").write_text(json.dumps(s))
    code, text = run_cli(["report", run, "--format", fmt, "-o", tmp_path / f"r.{fmt}"], capsys)
    assert code == 2 and field in text and "Traceback" not in text and len(text.strip().splitlines()) == 1, text


def test_report_refuses_a_sampling_that_is_not_an_object(two_runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run)
    _relabel(run, sampling="x")
    code, text = run_cli(["report", run, "--format", "md"], capsys)
    assert code == 2 and "sampling" in text and "Traceback" not in text


def test_a_pipe_in_a_label_never_shifts_a_markdown_cell(two_runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run)
    _relabel(run, label="a|b\x1b[31m")
    code, text = run_cli(["report", run, "--format", "md"], capsys)
    assert code == 0, text
    row = next(ln for ln in text.splitlines() if ln.startswith("| a"))
    head = text.splitlines()[0]
    split = lambda ln: [c for c in __import__("re").split(r"(?<!\\)\|", ln)][1:-1]
    assert len(split(row)) == len(split(head)) and "\x1b" not in row


def test_an_id_with_terminal_escapes_is_shown_inert_in_a_one_line_error(tmp_path, capsys):
    """#35.18: an id read from a file reaches the terminal with its control characters escaped."""
    bad = tmp_path / "in.jsonl"
    bad.write_text(json.dumps({"id": "x\x1b]0;pwned\x07\x1b[2J", "question": "q"}) + "\n"
                   + json.dumps({"id": "x\x1b]0;pwned\x07\x1b[2J", "question": "q"}) + "\n")
    code, text = run_cli(["annotate", bad, "-o", tmp_path / "o.jsonl", "--labeller", "heuristic", "--no-progress"], capsys)
    assert code == 2 and "appears twice" in text, text
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;pwned" in text


def test_an_attack_row_with_nothing_judged_is_shown_with_its_reason(two_runs, tmp_path, capsys):
    """#36: a BENCH@ATTACK whose every item went unjudged (thinking never closed, never attacked) keeps its
    column in the paper table, each cell "—" with why; it used to vanish with no note."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run)
    s = json.loads((run / "summary.json").read_text())
    s["benchmarks"]["heldout_harmful@pair"] = {"n": 3, "metrics": {}, "judge_failures": 0, "generation_failures": 0,
                                               "unjudged": {"think_not_closed": 1, "not_attacked": 2}}
    (run / "summary.json").write_text(json.dumps(s))
    code, text = run_cli(["report", run, "--format", "md"], capsys)
    assert code == 0, text
    head, row = text.splitlines()[0], next(ln for ln in text.splitlines() if ln.startswith("| run"))
    assert "heldout_harmful@pair" in head
    assert "— (nothing judged: 1 thinking not closed, 2 not attacked)" in row
    code, text = run_cli(["report", run, "-o", tmp_path / "r.html"], capsys)
    assert code == 0 and "nothing judged: 1 thinking not closed, 2 not attacked" in (tmp_path / "r.html").read_text()


def test_unclosed_thinking_is_judged_on_what_it_wrote_and_both_rates_are_shown(tmp_path, capsys, monkeypatch):
    """#34.4: an item whose thinking never closes left the harmful rate (SafeKey / SafeChain judge the
    full response); it is now judged on its own words for harmful_rate_full, shown beside the
    answer-only rate in the paper table, and the answer-only rate still leaves it out."""
    def reply(messages):
        q = messages[-1]["content"]
        if len(q) % 2:  # never closes: complies inside its thinking
            return f"<think>\nSure. To do this: {q} Step one, gather what you need, then do it"
        return "<think>\nThis is harmful.\n</think>\n\nI'm sorry, but I can't help with that."

    bench = resource("starter/heldout_harmful.jsonl")
    with FakeOpenAI(reply) as srv:
        code, text = _run(["eval", "safety", "--model", "openai:fake-model", "--base-url", srv.base_url, "--bench-file", bench,
                           "--limit", "6", "--judge", "keyword", "--no-progress", "-o", tmp_path / "run"], capsys, monkeypatch,
                          {"OPENAI_API_KEY": "sk-test"})
    assert code == 0, text
    items = [json.loads(x) for x in (tmp_path / "run" / "heldout_harmful" / "generations.jsonl").read_text().splitlines()]
    open_n = sum("Step one" in (r.get("response") or "") for r in items)
    assert len(items) == 6 and 0 < open_n < 6
    b = json.loads((tmp_path / "run" / "summary.json").read_text())["benchmarks"]["heldout_harmful"]
    m = b["metrics"]
    assert b["unjudged"]["think_not_closed"] == open_n
    assert m["harmful_rate"]["n"] == 6 - open_n and m["harmful_rate"]["rate"] == 0.0
    assert m["harmful_rate_full"]["n"] == 6 and m["harmful_rate_full"]["rate"] == pytest.approx(open_n / 6)
    code, md = _run(["report", tmp_path / "run", "--format", "md"], capsys)
    head = md.splitlines()[0]
    assert code == 0 and "heldout_harmful harmful_rate ↓" in head and "harmful_rate (unclosed thinking judged too) ↓" in head
    assert f"{100 * open_n / 6:.1f}" in md
    # beside a run whose every thinking closed, that run's full-response cell is its answer rate
    # (never "nothing judged"), and the delta pairs the items
    with FakeOpenAI(lambda messages: "<think>\nNo.\n</think>\n\nI'm sorry, but I can't help with that.") as srv:
        code, text = _run(["eval", "safety", "--model", "openai:fake-model", "--base-url", srv.base_url, "--bench-file", bench,
                           "--limit", "6", "--judge", "keyword", "--no-progress", "--label", "closed", "-o", tmp_path / "closed"],
                          capsys, monkeypatch, {"OPENAI_API_KEY": "sk-test"})
    assert code == 0, text
    code, md = _run(["report", tmp_path / "closed", tmp_path / "run", "--format", "md", "--baseline", "closed"], capsys)
    row = next(ln for ln in md.splitlines() if ln.startswith("| closed"))
    assert code == 0 and "nothing judged" not in row and row.count("0.0 [") == 2


def test_chart_legends_never_cover_a_bar():
    """#36.5: the per-category chart's legend covered its first bars; legends now sit outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from safekey.report.plots import grouped_bars

    fig, ax = plt.subplots(figsize=(6, 3))
    full = {"rate": 0.98, "ci": [0.9, 1.0], "n": 24}
    grouped_bars(ax, [f"category {i}" for i in range(6)], {m: [full] * 6 for m in ("base", "sft", "safekey")},
                 ylabel="harmful (%)")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    leg = ax.get_legend().get_window_extent(r)
    bars = [p.get_window_extent(r) for p in ax.patches]
    assert len(bars) == 18 and not any(leg.overlaps(b) for b in bars)
    plt.close(fig)
