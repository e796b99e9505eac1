"""Credentials never reach a file or the console: one redaction for everything safekey writes about
a run (configs, stats, step logs, failure reasons, error lines).

Why here and not in the generic file writer: a model's own text (a generation that happens to
hold ``?key=`` or ``user:pass@``) is data, and rewriting it in a view or a report is a silent
change of what the model said. So redaction is applied where secrets come from — configs,
commands, server error texts, logs — and never to generations.
"""

from __future__ import annotations

import os
import re
from typing import Any

# userinfo runs to the LAST "@" before the next space or quote (URL parsers split there, so a
# password may hold "@"; a "/" in it makes the URL malformed but must not leak either). Greedy on
# purpose: hiding a little too much of a malformed URL beats printing half a password.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s\"'<>]*)@")
_URL_SECRET_PARAM = re.compile(r"(?P<k>[?&](?:api[_-]?key|key|token|access[_-]?token|auth|sig|signature|password)=)"
                               r"(?P<v>[^&\s\"'#]+)", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(?P<k>\b(?:authorization|proxy-authorization|x-api-key|api-key)\b[\"']?\s*[:=]\s*[\"']?"
                          r"(?:(?:basic|bearer|token)\s+)?)(?P<v>[^\s\"',}]+)", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
_MIN_SECRET_LEN = 8  # shorter env values ("1", "true") would blank ordinary words


def _env_secrets() -> list[str]:
    """Values of environment variables named like secrets (OPENAI_API_KEY, HF_TOKEN …): a server
    error that quotes the key ("Incorrect API key provided: sk-…") is redacted by value."""
    vals = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(vals, key=len, reverse=True)


def redact_secrets(text: str) -> str:
    """URL credentials (``http://user:KEY@host``, ``?api_key=…``), Authorization headers and the
    values of secret environment variables → ``***``."""
    if not text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    text = _URL_SECRET_PARAM.sub(lambda m: f"{m.group('k')}***", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group('k')}***", text)
    for v in _env_secrets():
        if v in text:
            text = text.replace(v, "***")
    return text


_BIDI = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def terminal_safe(text: str, *, keep_newlines: bool = True) -> str:
    """Text for the console with every control character shown as an escape (``\\x1b``): an id or a
    name read from a file (``\\x1b]0;…``, ``\\x1b[2J``, a bidi override) must not retitle, clear or
    rewrite the user's terminal when an error names it."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if (ch == "\n" and keep_newlines) or ch == "\t":
            out.append(ch)
        elif o < 0x20 or 0x7F <= o < 0xA0 or o in _BIDI or o in (0x2028, 0x2029):
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def redact_obj(obj: Any) -> Any:
    """Every string inside a config / stats structure redacted (keys kept)."""
    if isinstance(obj, str):
        return redact_secrets(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def redact_logging() -> None:
    """Every log record (ours and libraries': httpx logs each request URL) is redacted when it is
    made, before any handler formats it. Idempotent."""
    import logging

    old = logging.getLogRecordFactory()
    if getattr(old, "_safekey_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed %-format: leave it to logging's own error path
            return record
        red = redact_secrets(text)
        if red != text:
            record.msg, record.args = red, None
        return record

    factory._safekey_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
