"""A real, local, fault-injecting OpenAI-compatible HTTP server for tests and benchmarks.

Why a real server and not a mocked client: retries, timeouts, dropped connections, Retry-After and
concurrency only get exercised when bytes cross a socket. This speaks the chat-completions wire
protocol (``POST /v1/chat/completions``, ``GET /v1/models``) on 127.0.0.1 with an ephemeral port.

Use it as a context manager::

    with FakeOpenAI(responder=lambda msgs: '{"score": 5}', latency=0.05, fault_rate=0.3, seed=0) as srv:
        be = get_backend("openai:fake-model", base_url=srv.base_url, api_key_env="FAKE_KEY")
        ...
        assert srv.count(status=200) == ...

or from a shell: ``python -m safekey.testing.fake_openai --port 8011 --latency 0.2``.

Faults (drawn per request with probability `fault_rate` from `faults`, reproducibly from `seed`,
or queued on demand with :meth:`FakeOpenAI.inject`):

* ``429``     rate limited, with a ``Retry-After`` header (`retry_after` seconds)
* ``500``     internal server error (JSON error body)
* ``503``     overloaded (no Retry-After)
* ``drop``    the connection is closed without any response
* ``slow``    the answer comes after `slow_s` seconds (past a short client timeout)
* ``nonjson`` HTTP 200 with an HTML body
* ``badjson`` HTTP 200 with JSON that has no ``choices``
* ``garbage`` HTTP 200, a well-formed completion whose text is noise (for parse-failure tests;
  transport-level clients cannot detect it, so it is not in the default fault mix)
* ``400``     bad request (a client error that must not be retried; not in the default mix)
* ``trickle`` HTTP 200 whose body arrives one byte every `trickle_s` seconds, never finishing within
  a per-read timeout's reach (a stuck proxy; not in the default mix)

A wrong key gets a 401 whose message repeats the presented key, as some proxies do, so that tests
prove the client scrubs it.

Every request is logged (:attr:`FakeOpenAI.log`) without the Authorization header.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Responder = Callable[..., str]
DEFAULT_FAULTS: tuple[str, ...] = ("429", "500", "503", "drop", "slow", "nonjson", "badjson")
ALL_FAULTS: tuple[str, ...] = DEFAULT_FAULTS + ("garbage", "400", "trickle")


class Refuse(Exception):
    """Raised by a responder: answer this one request with HTTP `status` (default 400, which clients
    do not retry), e.g. an outage of one kind of call only."""

    def __init__(self, message: str = "", status: int = 400):
        super().__init__(message)
        self.status = status


def echo(messages: list[dict[str, Any]]) -> str:
    """Default responder: the content of the last user message."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def messages_sha(messages: Any) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class LogEntry:
    seq: int
    time: float
    method: str
    path: str
    status: int | None  # None: connection dropped
    fault: str | None
    model: str | None = None
    messages_sha: str | None = None
    last_user: str | None = None
    body: dict[str, Any] = field(default_factory=dict)  # the parsed JSON request (no headers)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the default 5 refuses connections at 64 in flight
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out or drop connections are part of the test, not server errors."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections like with real APIs
    # headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms per request). Real servers (uvicorn, vLLM) set TCP_NODELAY too.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access log
        return

    # -- helpers -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _error(self, status: int, message: str, etype: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": etype, "code": None}}, headers)

    def _trickle(self, fake: FakeOpenAI) -> None:
        """200 + headers, then one byte of a long body per `trickle_s` (bounded: stops by itself)."""
        body = b'{"choices": [' + b" " * 100_000
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            deadline = time.monotonic() + 60.0
            for i in range(len(body)):
                if time.monotonic() > deadline:
                    break
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(fake.trickle_s)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _drop(self) -> None:
        """Close the socket with no response (RST), as a crashed proxy would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        fake = self.server.fake
        if urlsplit(self.path).path.rstrip("/") in ("/v1/models", "/models"):
            if not fake._authorized(self.headers):
                fake._record("GET", self.path, 401, "auth", None)
                return self._error(401, "Incorrect API key provided.", "invalid_request_error")
            fake._record("GET", self.path, 200, None, None)
            return self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "safekey"}]})
        fake._record("GET", self.path, 404, None, None)
        self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not urlsplit(self.path).path.rstrip("/").endswith("/chat/completions"):  # /v1/… or Azure's /openai/deployments/X/…
            fake._record("POST", self.path, 404, None, None)
            return self._error(404, f"no route {self.path}", "not_found")
        try:
            body = json.loads(raw or b"{}")
            messages = body["messages"]
            assert isinstance(messages, list)
        except (ValueError, KeyError, AssertionError):
            fake._record("POST", self.path, 400, None, None)
            return self._error(400, "body must be JSON with a 'messages' list", "invalid_request_error")
        if not fake._authorized(self.headers):
            fake._record("POST", self.path, 401, "auth", body)
            presented = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return self._error(401, f"Incorrect API key provided: {presented}.", "invalid_request_error")
        with fake._lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._chat(fake, body, messages)
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _chat(self, fake: FakeOpenAI, body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        fault = fake._draw_fault()
        if fake.latency:
            time.sleep(fake.latency)
        if fault == "429":
            fake._record("POST", self.path, 429, fault, body)
            return self._error(429, "Rate limit reached, slow down.", "rate_limit_error", {"Retry-After": f"{fake.retry_after:g}"})
        if fault == "400":
            fake._record("POST", self.path, 400, fault, body)
            return self._error(400, "Invalid value for 'messages'.", "invalid_request_error")
        if fault in ("500", "503"):
            fake._record("POST", self.path, int(fault), fault, body)
            return self._error(int(fault), "The server had an error processing your request.", "server_error")
        if fault == "drop":
            fake._record("POST", self.path, None, fault, body)
            return self._drop()
        if fault == "nonjson":
            fake._record("POST", self.path, 200, fault, body)
            return self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if fault == "badjson":
            fake._record("POST", self.path, 200, fault, body)
            return self._json(200, {"id": "x", "object": "chat.completion", "model": fake.model})
        if fault == "trickle":
            fake._record("POST", self.path, 200, fault, body)
            return self._trickle(fake)
        if fault == "slow":  # logged on arrival: the client has given up long before the answer
            fake._record("POST", self.path, 200, fault, body)
            time.sleep(fake.slow_s)

        try:
            text = fake._respond(messages, body) if fault != "garbage" else fake._garbage()
        except Refuse as e:  # the responder asked for an HTTP error on this request only
            fake._record("POST", self.path, e.status, "responder", body)
            return self._error(e.status, str(e) or "refused by the test responder", "invalid_request_error")
        except Exception as e:  # a broken test responder must show up as a 500, not hang the client
            fake._record("POST", self.path, 500, "responder", body)
            return self._error(500, f"responder raised {type(e).__name__}: {e}", "server_error")
        top = None
        if isinstance(text, dict):
            top, text = text.get("top_logprobs"), str(text["content"])
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        words = text.split(" ")
        if isinstance(max_tokens, int) and len(words) > max_tokens:  # one "token" per word, roughly
            text, finish = " ".join(words[:max_tokens]), "length"
        for stop in body.get("stop") or []:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        resp = {
            "id": f"chatcmpl-{fake._seq_peek()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", fake.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         **({"logprobs": {"content": [{"token": text.split(" ")[0], "logprob": 0.0, "top_logprobs": [
                             {"token": t, "logprob": lp} for t, lp in top.items()]}]}} if top and body.get("logprobs") else {})}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()), "total_tokens": prompt_tokens + len(text.split())},
        }
        if fault != "slow":
            fake._record("POST", self.path, 200, fault, body)
        try:
            self._json(200, resp)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to send to
            return


class FakeOpenAI:
    """The server. Thread-safe; start/stop explicitly or use ``with FakeOpenAI(...) as srv``."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        faults: Iterable[str] = DEFAULT_FAULTS,
        seed: int = 0,
        retry_after: float = 1.0,
        slow_s: float = 2.0,
        trickle_s: float = 0.5,
        api_key: str | None = None,
        model: str = "fake-model",
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        """`responder(messages)` or `responder(messages, body)` returns the assistant text.
        `api_key`: when set, requests must carry ``Authorization: Bearer <api_key>`` (or ``api-key``)."""
        self.responder: Responder = responder or echo
        self.latency = latency
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        bad = [f for f in self.faults if f not in ALL_FAULTS]
        if bad:
            raise ValueError(f"unknown faults {bad}; choose from {ALL_FAULTS}")
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.trickle_s = trickle_s
        self.api_key = api_key
        self.model = model
        self.host, self._port = host, port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queued: list[str] = []
        self.log: list[LogEntry] = []
        self._seq = 0
        self.in_flight = 0
        self.max_in_flight = 0  # the most chat requests the server was handling at once
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        httpd = _Server((self.host, self._port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- control -----------------------------------------------------------------------------
    def inject(self, fault: str, n: int = 1) -> None:
        """Force `fault` on the next `n` chat requests (before any random draw)."""
        if fault not in ALL_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {ALL_FAULTS}")
        with self._lock:
            self._queued.extend([fault] * n)

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def entries(self, **match: Any) -> list[LogEntry]:
        """Log entries whose fields equal all of `match` (e.g. ``status=200, fault=None``)."""
        with self._lock:
            return [e for e in self.log if all(getattr(e, k) == v for k, v in match.items())]

    def count(self, **match: Any) -> int:
        return len(self.entries(**match))

    # -- used by the handler -----------------------------------------------------------------
    def _authorized(self, headers: Any) -> bool:
        if self.api_key is None:
            return True
        auth = headers.get("Authorization", "")
        return auth == f"Bearer {self.api_key}" or headers.get("api-key") == self.api_key

    def _draw_fault(self) -> str | None:
        with self._lock:
            if self._queued:
                return self._queued.pop(0)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.faults)
        return None

    def _respond(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> str | dict[str, Any]:
        """The responder's text — or a dict ``{"content", "top_logprobs": {token: logprob}}`` for
        tests of first-token probabilities (returned as an OpenAI ``logprobs`` object)."""
        try:
            n = len(inspect.signature(self.responder).parameters)
        except (TypeError, ValueError):
            n = 1
        out = self.responder(messages, body) if n >= 2 else self.responder(messages)
        return out if isinstance(out, dict) else str(out)

    def _garbage(self) -> str:
        with self._lock:
            return "".join(self._rng.choice("{}[]\",:#@ abcxyz0123\n") for _ in range(40))

    def _seq_peek(self) -> int:
        with self._lock:
            return self._seq

    def _record(self, method: str, path: str, status: int | None, fault: str | None, body: dict[str, Any] | None) -> None:
        body = body or {}
        msgs = body.get("messages")
        last_user = echo(msgs) if isinstance(msgs, list) else None
        with self._lock:
            self._seq += 1
            self.log.append(
                LogEntry(self._seq, time.time(), method, path, status, fault, body.get("model"),
                         messages_sha(msgs) if msgs is not None else None, last_user, body)
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fault-injecting OpenAI-compatible server (echo responder).")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--faults", default=",".join(DEFAULT_FAULTS), help=f"comma list from {','.join(ALL_FAULTS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--slow-s", type=float, default=2.0)
    p.add_argument("--api-key-env", default=None, help="require the key held in this environment variable")
    a = p.parse_args(argv)
    import os

    key = os.environ.get(a.api_key_env) if a.api_key_env else None
    srv = FakeOpenAI(latency=a.latency, fault_rate=a.fault_rate, faults=[f for f in a.faults.split(",") if f], seed=a.seed,
                     retry_after=a.retry_after, slow_s=a.slow_s, api_key=key, host=a.host, port=a.port)
    srv.start()
    print(f"fake OpenAI server on {srv.base_url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
