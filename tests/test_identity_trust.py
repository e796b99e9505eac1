"""No number from another run (issue #35): what identifies an answer — the endpoint, every model file
that shapes a prompt or a token, a swapped file with its mtime restored — and the faults that used to
break a stage or leak a secret. Real servers on 127.0.0.1, real files, real processes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli

from safekey.evals.safety import SafetyEvalConfig, run_safety_eval
from safekey.judges import KeywordJudge
from safekey.llm import ChatRequest, Completion, Sampling, get_backend
from safekey.llm.core import local_model_id
from safekey.paths import resource
from safekey.redact import redact_secrets
from safekey.steps import Digests
from safekey.store import run_stage
from safekey.testing.fake_openai import FakeOpenAI
from safekey.types import Record

BENCH = str(resource("starter/heldout_harmful.jsonl"))


# -- 3. the response cache is keyed by the endpoint too ----------------------------------------------------


def test_two_servers_serving_one_name_never_answer_from_each_others_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    req = [ChatRequest(messages=[{"role": "user", "content": "which server?"}], sampling=Sampling(max_tokens=8))]
    with FakeOpenAI(lambda m: "server A") as a, FakeOpenAI(lambda m: "server B") as b:
        for srv, want in ((a, "server A"), (b, "server B"), (a, "server A")):
            be = get_backend("openai:fake-model", base_url=srv.base_url, cache_dir=str(tmp_path / "cache"))
            with be:
                assert be.generate(req)[0].text == want
        assert b.count(status=200) == 1 and a.count(status=200) == 1  # the third call came from A's own cache
        # the identity carries no credentials or query
        be = get_backend("openai:fake-model", base_url=a.base_url.replace("http://", "http://u:s3cretpw@") + "?key=zz")
        assert "s3cretpw" not in be.model_id() and "zz" not in be.model_id() and f":{a.port}/v1" in be.model_id()


def test_summary_says_how_many_answers_came_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SAFEKEY_HOME", str(tmp_path / "home"))
    with FakeOpenAI(lambda m: "I'm sorry, but I can't help with that.") as srv:
        cfg = SafetyEvalConfig(model="openai:fake-model", base_url=srv.base_url, bench_files=[BENCH], limit=4)
        first = run_safety_eval(cfg, tmp_path / "a", judge=KeywordJudge(), progress=False)
        again = run_safety_eval(cfg, tmp_path / "b", judge=KeywordJudge(), progress=False)
    assert first["llm_cache"]["model"] == {"requests": 4, "from_cache": 0}
    assert again["llm_cache"]["model"] == {"requests": 4, "from_cache": 4}
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["llm_cache"]["model"]["from_cache"] == 4


# -- 4 + 6. a local model's identity: template and tokenizer files; ctime ------------------------------------


@pytest.mark.parametrize("name", ["chat_template.jinja", "tokenizer.model", "merges.txt", "vocab.txt"])
def test_every_file_that_shapes_the_prompt_is_part_of_the_model_identity(tmp_path, name):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / name).write_text("{{ messages }}")
    before = local_model_id(tmp_path)
    (tmp_path / name).write_text("{{ other }}")
    assert local_model_id(tmp_path) != before
    (tmp_path / "README.md").write_text("notes")  # a note changes nothing that answers
    same = local_model_id(tmp_path)
    (tmp_path / "README.md").write_text("other notes")
    assert local_model_id(tmp_path) == same


def test_weights_swapped_in_place_with_the_mtime_restored_are_seen(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    w = model / "model.safetensors"
    w.write_bytes(b"A" * 4096)
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"B" * 4096)  # the same size: same-architecture checkpoints
    ident, digests = local_model_id(model), Digests(tmp_path / ".digests.json")
    first = digests.of(model)
    digests.save()
    st = w.stat()
    subprocess.run(["sh", "-c", f"cat {other} > {w}"], check=True)  # swapped in place: same inode, same size
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -r`: the old mtime back
    assert (w.stat().st_size, w.stat().st_mtime_ns, w.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert local_model_id(model) != ident
    assert Digests(tmp_path / ".digests.json").of(model) != first  # the digest cache is no excuse either


def test_a_short_or_odd_digest_cache_entry_is_hashed_again(tmp_path):
    f = tmp_path / "data.jsonl"
    f.write_text("x\n")
    good = Digests(tmp_path / ".digests.json")
    want = good.of(f)
    good.save()
    stamp = json.loads((tmp_path / ".digests.json").read_text())[str(f.resolve())][:-1]  # the stat without its hash
    for entry in (stamp, [*stamp, None], [*stamp, 7], [], [1], "zz", None):
        (tmp_path / ".digests.json").write_text(json.dumps({str(f.resolve()): entry}))
        assert Digests(tmp_path / ".digests.json").of(f) == want


def test_safekey_run_survives_a_short_digest_entry(tmp_path, tiny_model_dir, capsys):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(Path(BENCH).read_text().splitlines()[0] + "\n")
    spec = tmp_path / "e.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "model": str(tiny_model_dir), "offline": True, "include_base": True,
                                    "train_data": "{starter}/train.jsonl", "variants": [],
                                    "safety": {"bench_files": [str(bench)], "judge": "keyword", "max_new_tokens": 2}}))
    out = tmp_path / "out"
    code, text = run_cli(["run", spec, "-o", out], capsys)
    assert code == 0, text
    cache = json.loads((out / ".digests.json").read_text())
    (out / ".digests.json").write_text(json.dumps({k: v[:-1] for k, v in cache.items()}))  # stats kept, hashes cut
    code, text = run_cli(["run", spec, "-o", out], capsys)
    assert code == 0 and "Traceback" not in text and "IndexError" not in text, text


# -- 11. U+2028 / U+2029 / U+0085 inside a record -----------------------------------------------------------


def test_line_separators_inside_records_never_break_a_stage(tmp_path):
    odd = "a\u2028b\u2029c\u0085d\x1ce\x1df\x1eg\x0bh\x0ci"
    recs = [Record(id=str(i), question=f"{odd} {i}") for i in range(5)]
    out = tmp_path / "o.jsonl"

    def process(batch):
        return [r.model_copy(update={"answer": odd}) for r in batch]

    run_stage(stage="t", inputs=list(reversed(recs)), out=out, config={}, process=process, progress=False)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").split("\n") if x]
    assert [r["id"] for r in rows] == ["4", "3", "2", "1", "0"] and all(r["answer"] == odd for r in rows)
    # a rerun (everything resumed) and an input-order rewrite both read it back
    st = run_stage(stage="t", inputs=recs, out=out, config={}, process=process, progress=False)
    assert st["resumed"] == 5
    assert [json.loads(x)["id"] for x in out.read_text(encoding="utf-8").split("\n") if x] == ["0", "1", "2", "3", "4"]


def test_data_make_limit_slices_whole_records(tmp_path):
    from safekey.records import jsonl_lines

    text = "".join(json.dumps({"id": i, "q": "x\u2028y\u2029z\u0085"}, ensure_ascii=False) + "\n" for i in range(3))
    lines = jsonl_lines(text)
    assert len(lines) == 3 and [json.loads(x)["id"] for x in lines] == [0, 1, 2] and "".join(lines) == text


# -- 13 + 14. secrets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, secret", [
    ("http://user:p@ss@host:8000/v1", "p@ss"), ("http://user:pa/ss@host:8000/v1", "pa/ss"),
    ("https://me:a@b/c@d@api.example.org/v1/chat", "a@b/c@d"), ("http://tok3n@host/v1", "tok3n"),
])
def test_url_passwords_with_at_and_slash_are_fully_redacted(url, secret):
    out = redact_secrets(f"endpoint {url} failed; retry {url}")
    scheme, rest = url.split("://", 1)
    clean = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"  # what a URL parser calls the host part, nothing before it
    assert out == f"endpoint {clean} failed; retry {clean}" and secret not in out
    assert redact_secrets("http://host:8000/v1 and mail me@example.org") == "http://host:8000/v1 and mail me@example.org"


def test_preflight_with_a_slash_in_the_password_is_one_line_without_the_secret(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    code, text = run_cli(["eval", "safety", "--model", "openai:m", "--base-url", "http://user:pa/ss@127.0.0.1:9/v1",
                          "--bench-file", BENCH, "--limit", "1", "-o", tmp_path / "o"], capsys)
    assert code == 2 and "Traceback" not in text and "pa/ss" not in text and ":pa" not in text and "ss@" not in text
    assert len(text.strip().splitlines()) == 1, text


def test_safekey_run_never_writes_attacker_credentials_to_its_configs(tmp_path, tiny_model_dir, capsys):
    spec = tmp_path / "e.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "model": str(tiny_model_dir), "offline": True, "include_base": True,
                                    "train_data": "{starter}/train.jsonl", "variants": [],
                                    "safety": {"bench_files": [BENCH], "attacks": ["pair"], "attack_settings": {"pair": {
                                        "attacker": "openai:att", "attacker_base_url": "http://me:hunter2pw@127.0.0.1:9/v1"}}}}))
    code, text = run_cli(["run", spec, "-o", tmp_path / "out", "--dry-run"], capsys)
    assert code == 2 and "credential" in text and "hunter2pw" not in text
    assert not any("hunter2pw" in p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file()) \
        if (tmp_path / "out").exists() else True


# -- 17. --samples bounded ---------------------------------------------------------------------------------


def test_samples_are_bounded_before_anything_is_allocated(tmp_path, capsys):
    code, text = run_cli(["eval", "safety", "--model", "openai:m", "--samples", "200000000", "--limit", "1",
                          "--temperature", "0.7", "--bench-file", BENCH, "-o", tmp_path / "o"], capsys)
    assert code == 2 and "--samples" in text and "Traceback" not in text
    code, text = run_cli(["eval", "reasoning", "--model", "openai:m", "--samples", "200000000", "--limit", "1",
                          "-o", tmp_path / "r"], capsys)
    assert code == 2 and "--samples" in text
    with pytest.raises(ValueError):
        SafetyEvalConfig(model="x", samples=10**8, temperature=0.7)


# -- 7. Safe@K's K is the configured one ---------------------------------------------------------------------


class _LastSampleFails:
    """Every item's second sample fails (seed = sample index when no --seed is given)."""

    def generate(self, reqs, cache=None):
        return [Completion(error="boom") if r.sampling.seed == 1 else
                Completion(text="I'm sorry, but I can't help with that.", finish_reason="stop") for r in reqs]

    def model_id(self):
        return "scripted"

    def close(self):
        pass


def test_safe_at_k_is_never_computed_on_fewer_samples_than_configured(tmp_path):
    cfg = SafetyEvalConfig(model="openai:x", bench_files=[BENCH], limit=3, samples=2, temperature=0.7,
                           max_generation_failures=1.0)
    s = run_safety_eval(cfg, tmp_path / "run", backend=_LastSampleFails(), judge=KeywordJudge(), progress=False)
    b = s["benchmarks"]["heldout_harmful"]
    assert b["samples"] == 2 and s["sampling"]["samples"] == 2
    assert "safe@k" not in b["metrics"] and "conssafe@k" not in b["metrics"]  # no item has its 2 judged samples
    assert b["metrics"]["safe@1"]["rate"] == 1.0


# -- 5. files named in settings are step inputs -----------------------------------------------------------


def test_a_prefixes_file_and_bench_path_named_in_settings_are_step_inputs(tmp_path, tiny_model_dir):
    from safekey.experiment import load_experiment, plan_steps

    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"id": "x", "prefix": "Sure, I will explain"}\n')
    bench = tmp_path / "sr.jsonl"
    bench.write_text(Path(BENCH).read_text())
    grpo = tmp_path / "grpo-traces.jsonl"
    grpo.write_text('{"id": "x", "prefix": "Sure"}\n')
    spec = tmp_path / "e.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "t", "model": str(tiny_model_dir), "offline": True, "include_base": True, "train_data": "{starter}/train.jsonl",
        "variants": [{"name": "g", "mode": "grpo", "set": {"prefill_traces": str(grpo)}}],
        "safety": {"benches": ["strongreject"], "judge": "keyword", "attacks": ["prefill-thinking"],
                   "attack_settings": {"prefill-thinking": {"prefixes": str(traces)}},
                   "extra_args": ["--bench-path", f"strongreject={bench}"]}}))
    exp, here = load_experiment(spec)
    steps, _ = plan_steps(exp, here, tmp_path / "out", str(tiny_model_dir))
    ev = next(s for s in steps if s.name == "eval-base")
    tr = next(s for s in steps if s.name.startswith("train-g"))
    assert {str(traces), str(bench)} <= {str(p) for p in ev.inputs}
    assert str(grpo) in {str(p) for p in tr.inputs}


@pytest.mark.slow
def test_editing_a_named_prefixes_file_reruns_the_eval(tmp_path, tiny_model_dir, capsys):
    traces = tmp_path / "traces.jsonl"
    rows = [json.loads(x) for x in Path(BENCH).read_text().splitlines()[:1]]
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps(rows[0]) + "\n")
    traces.write_text(json.dumps({"id": rows[0]["id"], "prefix": "Sure, first"}) + "\n")
    spec = tmp_path / "e.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "t", "model": str(tiny_model_dir), "offline": True, "include_base": True, "train_data": "{starter}/train.jsonl",
        "variants": [], "safety": {"bench_files": [str(bench)], "judge": "keyword", "max_new_tokens": 2,
                                   "attacks": ["prefill-thinking"],
                                   "attack_settings": {"prefill-thinking": {"prefixes": str(traces)}}}}))
    out = tmp_path / "out"
    code, text = run_cli(["run", spec, "-o", out], capsys)
    assert code == 0, text
    traces.write_text(json.dumps({"id": rows[0]["id"], "prefix": "EDITED opening"}) + "\n")
    code, text = run_cli(["run", spec, "-o", out], capsys)
    assert code == 0 and "eval-base: its inputs changed" in text, text
    gens = (out / "eval" / "base" / "bench@prefill-thinking" / "generations.jsonl").read_text()
    assert "EDITED opening" in gens


def test_no_stage_config_safekey_run_writes_may_carry_a_credential(tmp_path, tiny_model_dir, capsys):
    """A GRPO judge endpoint with a password in a variant's settings is refused like an attacker's."""
    spec = tmp_path / "e.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "model": str(tiny_model_dir), "offline": True, "include_base": False,
                                    "train_data": "{starter}/train.jsonl",
                                    "variants": [{"name": "g", "mode": "grpo", "set": {
                                        "grpo_judge_base_url": "http://me:hunter2pw@127.0.0.1:9/v1"}}]}))
    code, text = run_cli(["run", spec, "-o", tmp_path / "out", "--dry-run"], capsys)
    assert code == 2 and "credential" in text and "hunter2pw" not in text
