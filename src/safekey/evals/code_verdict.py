"""A HumanEval verdict that the model's code cannot forge.

Why: when the candidate and the benchmark's asserts share one interpreter, the candidate owns the
verdict. It can read the harness's completion proof through ``sys._getframe`` or ``gc`` and write
it to the result pipe, exit 0 early, patch ``AssertionError`` away, or return an object whose
``__eq__`` is always True — and be graded "passed" for a wrong answer.

Here the verdict is computed in a second sandboxed process that the candidate cannot reach:

* the **candidate** process runs prompt + completion and then serves calls: it reads a request
  (the arguments), calls the entry point, and writes back the result as *data* (tagged JSON of
  builtin types: None, bool, int, float, complex, str, bytes, list, tuple, set, frozenset, dict);
  anything else — a subclass, an always-equal object — is sent as ``opaque`` and equals nothing;
* the **checker** process runs the benchmark's prompt (its helpers, e.g. ``poly`` or
  ``encode_cyclic``, the model cannot redefine) and test, calling ``check(candidate)`` with a proxy
  that forwards each call to the candidate process and decodes the reply into fresh builtin
  objects. Only the checker holds the proof the parent waits for;
* the two run in separate sandboxes (separate PID namespaces under bubblewrap), under separate
  throw-away uids, and share nothing but two pipes.

So a candidate can only influence the verdict through the values it returns. Not supported: tests
that inspect the candidate's side effects on its arguments (HumanEval has none).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..types import SafekeyError
from .sandbox import (
    AUDIT_PRELUDE,
    Isolation,
    Limits,
    SandboxResult,
    _exception_line,
    _read_available,
    _tail,
    isolation_mode,
    signal_reason,
    spawn,
)

# Tagged-JSON codec shared by both harnesses (text, so each process defines its own copy).
CODEC = '''\
import json as _cj, sys as _cs
try:
    _cs.set_int_max_str_digits(0)
except AttributeError:
    pass
_C_SCALARS = {type(None): "none", bool: "bool", int: "int", float: "float", complex: "complex", str: "str", bytes: "bytes"}
_C_SEQS = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}


def _c_enc(x, depth=0):
    t = type(x)  # exact types only: a subclass could carry its own __eq__
    if depth > 200:
        return ["opaque", "too deep"]
    tag = _C_SCALARS.get(t)
    if tag == "none":
        return ["none", None]
    if tag in ("bool", "str"):
        return [tag, x]
    if tag in ("int", "float"):
        return [tag, repr(x)]
    if tag == "complex":
        return [tag, [repr(x.real), repr(x.imag)]]
    if tag == "bytes":
        return [tag, x.hex()]
    tag = _C_SEQS.get(t)
    if tag is not None:
        return [tag, [_c_enc(v, depth + 1) for v in x]]
    if t is dict:
        return ["dict", [[_c_enc(k, depth + 1), _c_enc(v, depth + 1)] for k, v in x.items()]]
    return ["opaque", t.__name__]


class _COpaque:
    """A value the other side could not send as data: equal to nothing, not even itself."""

    def __init__(self, name):
        self.name = name

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<opaque {self.name}>"


def _c_dec(v):
    tag, p = v
    if tag == "none":
        return None
    if tag == "bool":
        return bool(p)
    if tag == "int":
        return int(p)
    if tag == "float":
        return float(p)
    if tag == "complex":
        return complex(float(p[0]), float(p[1]))
    if tag == "str":
        return str(p)
    if tag == "bytes":
        return bytes.fromhex(p)
    if tag == "list":
        return [_c_dec(x) for x in p]
    if tag == "tuple":
        return tuple(_c_dec(x) for x in p)
    if tag == "set":
        return {_c_dec(x) for x in p}
    if tag == "frozenset":
        return frozenset(_c_dec(x) for x in p)
    if tag == "dict":
        return {_c_dec(k): _c_dec(x) for k, x in p}
    return _COpaque(str(p))
'''

CANDIDATE = CODEC + '''
import os as _co
_c_rq, _c_rs, _c_path, _c_entry = int(_cs.argv[1]), int(_cs.argv[2]), _cs.argv[3], _cs.argv[4]
del _cs.argv[1:5]
_c_in, _c_out = _co.fdopen(_c_rq, "rb"), _co.fdopen(_c_rs, "wb")
with open(_c_path, encoding="utf-8") as _c_f:
    _c_code = compile(_c_f.read(), _c_path, "exec")
_c_g = {"__name__": "__main__", "__file__": _c_path, "__builtins__": __builtins__}
exec(_c_code, _c_g)
_c_fn = _c_g[_c_entry]
for _c_line in _c_in:
    _c_args = [_c_dec(a) for a in _cj.loads(_c_line)]
    try:
        _c_res = ["ok", _c_enc(_c_fn(*_c_args))]
    except BaseException as _c_e:  # the checker sees the exception as a failed call
        _c_res = ["raise", type(_c_e).__name__ + ": " + str(_c_e)[:200]]
    _c_out.write((_cj.dumps(_c_res) + "\\n").encode())
    _c_out.flush()
'''

CHECKER = CODEC + '''
import os as _ko
_k_secret_fd, _k_proof, _k_rq, _k_rs, _k_src_fd, _k_entry = (int(_cs.argv[1]), int(_cs.argv[2]), int(_cs.argv[3]),
                                                              int(_cs.argv[4]), int(_cs.argv[5]), _cs.argv[6])
_k_secret = _ko.read(_k_secret_fd, 64)
_ko.close(_k_secret_fd)
with _ko.fdopen(_k_src_fd, "rb") as _k_f:  # the test comes through a pipe: no file the candidate could read or rewrite
    _k_src = _k_f.read().decode("utf-8")
_k_to, _k_from = _ko.fdopen(_k_rq, "wb"), _ko.fdopen(_k_rs, "rb")


class CandidateError(Exception):
    pass


class _Candidate:
    """Stands for the model's function: each call goes to the candidate process, as data."""

    __name__ = _k_entry

    def __call__(self, *args):
        _k_to.write((_cj.dumps([_c_enc(a) for a in args]) + "\\n").encode())
        _k_to.flush()
        line = _k_from.readline()
        if not line:
            raise CandidateError("the candidate process ended")
        tag, val = _cj.loads(line)
        if tag == "raise":
            raise CandidateError(str(val))
        if tag != "ok":
            raise CandidateError("malformed reply")
        return _c_dec(val)


_k_code = compile(_k_src, "<check>", "exec")
_k_g = {"__name__": "__main__", "__file__": "<check>", "__builtins__": __builtins__}
exec(_k_code, _k_g)
_k_g[_k_entry] = _k_cand = _Candidate()  # as in the reference harness, the entry point's name is the candidate
_k_g["check"](_k_cand)
_ko.write(_k_proof, _k_secret)
'''


def checker_program(prompt: str, test: str) -> str:
    """What the checker runs: the benchmark's own prompt (helpers the test calls) and its test."""
    return f"{prompt}\n    pass\n\n{test}\n"


def _feed(fd: int, data: bytes) -> None:
    """Write `data` to the pipe `fd` from a thread and close it (a test over the pipe's 64 KiB must
    not block the parent while the checker is still starting; a checker that died just drops it)."""
    import threading

    def go() -> None:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except (BrokenPipeError, OSError):
            return

    threading.Thread(target=go, daemon=True).start()


def refuse_shared_user(mode: str) -> None:
    """HumanEval's checker and candidate must not run as one user on a shared file system and
    /proc (the netns and audit modes as a normal user): the candidate could reach the checker's
    pipes through ``/proc/PID/fd``. Bubblewrap, or root (each side its own throw-away uid), holds."""
    if mode != "bwrap" and os.geteuid() != 0:
        raise SafekeyError(f"HumanEval: the '{mode}' sandbox as a normal user runs the model's code as the same user as the "
                           "checker (shared /proc), so the verdict could be forged; install bubblewrap (apt-get install "
                           "bubblewrap) or run as root")


def run_humaneval(program: str, prompt: str, test: str, entry_point: str, *, limits: Limits = Limits(),
                  isolation: Isolation = "auto") -> SandboxResult:
    """Grade `program` (prompt + the model's completion) on `test`: "passed" only when the checker
    process ran every assert of ``check(candidate)`` on the candidate's returned values."""
    mode = isolation_mode(isolation)[0]
    refuse_shared_user(mode)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="safekey-he-"))
    os.chmod(tmp, 0o711)  # each side's throw-away uid must reach its own subfolder, not list the other's
    half = Limits(timeout_s=limits.timeout_s, memory_mb=limits.memory_mb // 2, cpu_s=limits.cpu_s,
                  max_procs=max(1, limits.max_procs // 2), max_file_mb=limits.max_file_mb)  # the pair fits `limits`
    secret = secrets.token_hex(16).encode()
    req_r, req_w = os.pipe()  # checker → candidate
    rep_r, rep_w = os.pipe()  # candidate → checker
    sec_r, sec_w = os.pipe()
    proof_r, proof_w = os.pipe()
    src_r, src_w = os.pipe()  # parent → checker: the test program (expected values), never a file
    fds = {"req_r": req_r, "req_w": req_w, "rep_r": rep_r, "rep_w": rep_w, "sec_r": sec_r, "sec_w": sec_w,
           "proof_r": proof_r, "proof_w": proof_w, "src_r": src_r, "src_w": src_w}

    def close(*names: str) -> None:
        for n in names:
            if fds[n] >= 0:
                os.close(fds[n])
                fds[n] = -1

    prelude = AUDIT_PRELUDE if mode == "audit" else ""
    cand = chk = None
    try:
        os.write(sec_w, secret)
        close("sec_w")
        try:
            cand = spawn(tmp / "candidate", {"program.py": program, "harness.py": prelude + CANDIDATE}, "harness.py",
                         (req_r, rep_w), limits=half, isolation=isolation, file_args=("program.py",),
                         extra_args=(entry_point,))
            close("req_r", "rep_w")
            # the checker's harness runs from argv (-c) and its test arrives through a pipe: in the netns and
            # audit modes the host file system is shared, and a file would be readable (expected values) or,
            # for the same user, rewritable before the checker compiled it
            chk = spawn(tmp / "checker", {}, "", (sec_r, proof_w, req_w, rep_r, src_r), limits=half, isolation=isolation,
                        extra_args=(entry_point,), code=prelude + CHECKER)
        except (OSError, subprocess.SubprocessError) as e:
            return SandboxResult("error", f"could not start sandbox: {e}", None, time.monotonic() - t0, mode)
        close("sec_r", "proof_w", "req_w", "rep_r", "src_r")
        _feed(fds["src_w"], checker_program(prompt, test).encode("utf-8"))
        fds["src_w"] = -1
        rc, timed_out = chk.wait(limits.timeout_s)
        cand.kill()
        cand.proc.wait()
        proof = _read_available(proof_r)
        dur = time.monotonic() - t0
        stdout = _tail(cand.out_path)
        stderr = (_tail(cand.err_path, 2000) + "\n" + _tail(chk.err_path, 2000)).strip()
        if timed_out:
            return SandboxResult("timeout", f"timeout after {limits.timeout_s:g}s (process group killed)", rc, dur, mode,
                                 stdout, stderr)
        killed = signal_reason(rc, chk.prefix)
        if killed:
            return SandboxResult(killed[0], killed[1], rc, dur, mode, stdout, stderr)
        if rc == 0 and proof == secret:
            return SandboxResult("passed", "ok", rc, dur, mode, stdout, stderr)
        reason = _exception_line(_tail(chk.err_path)) or _exception_line(_tail(cand.err_path)) or f"exit status {rc}"
        return SandboxResult("failed", reason, rc, dur, mode, stdout, stderr)
    finally:
        for sp in (cand, chk):
            if sp is not None and sp.proc.poll() is None:
                sp.kill()
                sp.proc.wait()
        close(*fds)
        shutil.rmtree(tmp, ignore_errors=True)


def run_many_humaneval(jobs: list[tuple[str, str, str, str]], *, limits: Limits = Limits(), isolation: Isolation = "auto",
                       workers: int = 2) -> list[SandboxResult]:
    """:func:`run_humaneval` over (program, prompt, test, entry point) jobs in parallel, results in order."""
    from concurrent.futures import ThreadPoolExecutor

    refuse_shared_user(isolation_mode(isolation)[0])  # probe once before the threads start; refuse in one line
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(lambda j: run_humaneval(*j, limits=limits, isolation=isolation), jobs))


__all__ = ["CANDIDATE", "CHECKER", "CODEC", "checker_program", "refuse_shared_user", "run_humaneval", "run_many_humaneval"]
