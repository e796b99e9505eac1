"""URL and hub-id loading: the shared data served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safekey.datamaking.collect import CollectConfig
from safekey.datamaking.collect import run as collect_run
from safekey.sources import load_table, read_text_source
from safekey.types import SafekeyError


class _Handler(SimpleHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012 - shared on purpose: the handler class records every request

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path.startswith("/garbage/"):
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *a):
        pass


@pytest.fixture()
def server(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEKEY_HOME", str(tmp_path / "home"))  # a fresh download cache
    _Handler.hits = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(data_dir)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _canon(rows) -> str:
    """Rows as comparable text (parquet list columns come back as numpy arrays)."""
    return "\n".join(json.dumps(r, sort_keys=True, default=lambda x: x.tolist()) for r in rows)


@pytest.mark.parametrize("rel", ["advbench/harmful_behaviors.csv", "mmlu_pro/validation-00000-of-00001.parquet",
                                 "humaneval/HumanEval.jsonl.gz", "star1/STAR-1.json", "math500/test.jsonl"])
def test_url_equals_local_and_is_cached(server, shared, rel):
    url = f"{server}/{rel}"
    rows = _canon(load_table(url))
    assert rows == _canon(load_table(shared(rel))) and rows.count("\n") > 0
    assert _canon(load_table(url)) == rows
    assert _Handler.hits == [f"/{rel}"]  # the second load came from the download cache


def test_url_errors_name_the_url_and_leave_no_bad_cache(server):
    with pytest.raises(SafekeyError, match=r"could not download .*/nope/missing\.csv.*404"):
        load_table(f"{server}/nope/missing.csv")
    url = f"{server}/garbage/rows.parquet"
    for _ in range(2):  # an error page is not cached as data: each try downloads again
        with pytest.raises(SafekeyError, match=r"garbage/rows\.parquet: the downloaded file is not a readable \.parquet"):
            load_table(url)
    assert _Handler.hits.count("/garbage/rows.parquet") == 2
    assert read_text_source(f"{server}/strongreject/rubric_user.txt").count("{forbidden_prompt}") == 1


def test_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SafekeyError, match=r"could not load hub dataset 'walledai/AdvBench'.*offline, pass a local file"):
        load_table("walledai/AdvBench", split="train")


def test_collect_reads_a_source_and_a_test_set_by_url(server, tmp_path):
    cfg = CollectConfig(sources=["HarmfulQ"], test_sets=["advbench"], allow_missing=False,
                        overrides={"HarmfulQ": {"path": f"{server}/star1/STAR-1.json", "format": "records"},
                                   "advbench": f"{server}/advbench/harmful_behaviors.csv"})
    st = collect_run(str(tmp_path / "pool.jsonl"), cfg)
    assert st["pool"] == 1 and st["tests"] == 520  # STAR-1 holds 1 HarmfulQ row; AdvBench has 520 goals
