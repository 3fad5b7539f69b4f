"""Sandbox for model-written Python: run it against test cases so that the code reward can count passes.

Owns `SandboxConfig`, `check_sandbox`, `run_tests`, `run_code`, `sandbox_status`; the program that runs inside
the sandbox is `rl/sandbox_child.py`. Must not import `wgpu`; imports the engine only to raise its InputError.

Isolation (`SandboxConfig.isolation`), probed once per configuration by running a trivial program:
- "auto" (the default): "bwrap" when it works here, else "unshare" (one warning says what that lacks), never
  "limits"; when neither works no model code runs: `check_sandbox` raises and every run scores 0. "bwrap"
  and "unshare" ask for that mode alone.
- "bwrap" (bubblewrap, run as an unprivileged user): new user, pid, network, ipc, uts and cgroup namespaces
  (no network: only a private, empty loopback), no nested user namespaces, /usr (and the interpreter's prefix
  when it lives elsewhere) bound read-only, the root and /dev remounted read-only, private size-limited tmpfs
  at /work (the working directory), /tmp and /dev/shm, an empty environment. Everything the code starts
  lives in the sandbox's pid namespace and is killed with it when the code returns or times out.
- "unshare" (`unshare --user` permitted): new network and pid namespaces (everything the code starts dies with
  it, too); the host's files are visible, guarded by file permissions only; a private temp dir as working
  directory, bounded per file by RLIMIT_FSIZE but not in total.
- "limits", only when asked for by name (and then with one warning per configuration saying so): the limits,
  the unprivileged user, a private temp dir, an empty environment and the process group kill. The network
  is open, the host's files are readable (and writable) wherever the sandbox user may, a process that calls
  setsid() escapes the group kill, as do the code's children when the trainer itself is killed (their CPU
  time stays bounded by RLIMIT_CPU).
In every mode: RLIMIT_AS, CPU, FSIZE, NOFILE, NPROC and CORE=0 are set before the exec (by a tiny `python -c`
wrapper, not `preexec_fn`, which is unsafe in a threaded trainer), the trainer's death kills the sandbox
(PR_SET_PDEATHSIG, bwrap's --die-with-parent, unshare's --kill-child), a wall-clock timeout applies, and the
whole process group is SIGKILLed after every run whether or not it ended in time. stdout and stderr go to
unlinked temp files capped by RLIMIT_FSIZE and only their tails are read back; the test results come back
through a separate file descriptor and are validated (one line, a per-run nonce, exactly one boolean per
test), so printed text is never trusted. The code runs in the same interpreter as the test runner, so code
that digs the nonce out of the runner's frames can forge the line, but never claim more than `total` passes.

User: as root, the code runs as `config.uid`/`config.gid` (65534, nobody/nogroup) with no supplementary
groups: RLIMIT_NPROC never binds root. It counts every process of the real uid, so the limit is set to the
processes that uid already runs plus `config.processes` (runs in parallel threads therefore share that
allowance loosely: each adds at most `config.processes` to what runs when it starts). Not as root, the code
runs as the current user: bwrap still isolates it; in "unshare" and "limits" mode it can write (and read)
whatever that user can.
Runs are thread-safe: the code reward runs several at once from a thread pool.

Every failure of the *code* (syntax error, exception, timeout, memory, crash, a refused write or connection)
is a result with passed=0 and a short `error`, never an exception; so is a run when no isolation works here
(error "sandbox unavailable"; `check_sandbox` says so up front instead). Wrong arguments (types, empty test
list, a test that is not valid Python, a bad config) raise TypeError/ValueError.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from wgrpo.rl.errors import input_error

__all__ = ["ISOLATIONS", "SandboxConfig", "SandboxResult", "CodeResult", "check_sandbox", "run_tests", "run_code",
           "sandbox_status"]

log = logging.getLogger(__name__)

_CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text()
_PATH = "/usr/local/bin:/usr/bin:/bin"
ISOLATIONS = ("auto", "bwrap", "unshare", "limits")
_CANDIDATES = {"auto": ("bwrap", "unshare"), "bwrap": ("bwrap",), "unshare": ("unshare",), "limits": ("limits",)}
_ERROR = re.compile(r"[A-Za-z0-9 _:.\-]{1,80}")  # what an error reported by the child may look like
_MiB = 1 << 20

# Runs first, as the sandbox user: limits, then PR_SET_PDEATHSIG(SIGKILL), then exec of the rest of argv.
_LIMITER = """\
import ctypes, json, os, resource, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)
except Exception:
    pass
for name, (soft, hard) in json.loads(sys.argv[1]).items():
    resource.setrlimit(getattr(resource, name), (soft, hard))
os.execv(sys.argv[2], sys.argv[2:])
"""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation of one sandboxed run; the defaults suit unit-test style code tasks."""

    memory_mb: int = field(default=1024, metadata={
        "help": "address-space limit (RLIMIT_AS) of each sandboxed process, MiB"})
    cpu_s: int = field(default=10, metadata={
        "help": "CPU-time limit (RLIMIT_CPU) of each sandboxed process, seconds (SIGXCPU, then SIGKILL 1 s later)"})
    file_size_mb: int = field(default=16, metadata={
        "help": "largest file a sandboxed process may write (RLIMIT_FSIZE), MiB; also caps captured stdout/stderr"})
    disk_mb: int = field(default=64, metadata={
        "help": "size of each private tmpfs under bubblewrap (/work, /tmp, /dev/shm), MiB"})
    open_files: int = field(default=64, metadata={
        "help": "open file descriptors per process (RLIMIT_NOFILE)"})
    processes: int = field(default=32, metadata={
        "help": "processes and threads the sandbox user may add (RLIMIT_NPROC, on top of those it already runs)"})
    timeout_s: float = field(default=5.0, metadata={
        "help": "wall-clock limit of one run, seconds; a timeout_s argument of run_tests/run_code overrides it"})
    isolation: str = field(default="auto", metadata={
        "help": "'auto': bubblewrap, else unshare; no code runs when neither works here. 'bwrap', 'unshare': that "
                "one or no code runs. 'limits': resource limits alone (network open, host files readable), only "
                "when asked for"})
    python: str = field(default="", metadata={
        "help": "interpreter for the code; '' = /usr/bin/python3 when present, else the trainer's own. The "
                "sandbox user must be able to read and execute it"})
    bwrap: str = field(default="bwrap", metadata={"help": "bubblewrap executable, a name on PATH or a path"})
    unshare: str = field(default="unshare", metadata={
        "help": "util-linux unshare executable, a name on PATH or a path"})
    uid: int = field(default=65534, metadata={"help": "user id the code runs as when the trainer is root (nobody)"})
    gid: int = field(default=65534, metadata={"help": "group id the code runs as when the trainer is root (nogroup)"})
    output_bytes: int = field(default=4096, metadata={"help": "bytes kept from the end of stdout and of stderr"})

    def __post_init__(self):
        for name in ("memory_mb", "cpu_s", "file_size_mb", "disk_mb", "open_files", "processes", "uid", "gid",
                     "output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SandboxConfig.{name} must be a positive int, got {value!r}")
        _check_timeout(self.timeout_s, "SandboxConfig.timeout_s")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"SandboxConfig.isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        if not all(isinstance(value, str) for value in (self.python, self.bwrap, self.unshare)):
            raise TypeError("SandboxConfig.python, .bwrap and .unshare must be str")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of `run_tests`: `passed` of `total` tests; `error` is a short reason or None."""

    passed: int
    total: int
    timed_out: bool = False
    error: str | None = None  # "timeout", "cpu time limit", "memory", "syntax error", "sandbox unavailable", ...
    stdout_tail: str = ""
    stderr_tail: str = ""
    isolation: str = ""  # "bwrap", "unshare", "limits" or "unavailable"
    wall_s: float = 0.0


@dataclass(frozen=True)
class CodeResult:
    """Outcome of `run_code`: the exit status (None when it never ran) and the tails of the output."""

    returncode: int | None
    stdout_tail: str = ""
    stderr_tail: str = ""
    timed_out: bool = False
    error: str | None = None
    isolation: str = ""
    wall_s: float = 0.0


@dataclass(frozen=True)
class _Isolation:
    mode: str  # "bwrap", "unshare", "limits", "unavailable"
    python: str
    tool: str  # the bwrap or unshare executable of the mode; "" for "limits"
    detail: str  # why the stronger modes were passed over, or why none works


@dataclass(frozen=True)
class _Raw:
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    result: bytes
    wall_s: float
    error: str | None = None


def _check_timeout(value, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


def _resolve_python(config: SandboxConfig) -> str:
    python = config.python or ("/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
    return os.path.realpath(shutil.which(python) or python)


def _count_processes(uid: int) -> int:
    count = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    count += entry.stat(follow_symlinks=False).st_uid == uid
    return count


def _limits(config: SandboxConfig, uid: int) -> dict[str, tuple[int, int]]:
    nproc = config.processes + _count_processes(uid)  # RLIMIT_NPROC counts every process of the real uid
    return {"RLIMIT_AS": (config.memory_mb * _MiB,) * 2, "RLIMIT_CPU": (config.cpu_s, config.cpu_s + 1),
            "RLIMIT_FSIZE": (config.file_size_mb * _MiB,) * 2, "RLIMIT_NOFILE": (config.open_files,) * 2,
            "RLIMIT_NPROC": (nproc, nproc), "RLIMIT_CORE": (0, 0)}


def _bwrap_argv(config: SandboxConfig, bwrap: str, python: str) -> list[str]:
    size = str(config.disk_mb * _MiB)
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    if not python.startswith("/usr/"):  # e.g. a pyenv interpreter: bind its prefix read-only
        prefix = os.path.dirname(os.path.dirname(python))
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
             "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/work", "--remount-ro", "/",
             "--chdir", "/work", "--clearenv", "--setenv", "PATH", _PATH, "--setenv", "HOME", "/work",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--"]
    return argv


def _tail(file, limit: int) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - limit))
    text = file.read(limit).decode("utf-8", errors="replace")
    return f"[... {size - limit} bytes cut ...]\n{text}" if size > limit else text


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the child to exit without reaping it (its pid, hence its group, cannot be reused meanwhile)."""
    deadline, pause = time.monotonic() + timeout_s, 0.001
    while True:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return False
        except ChildProcessError:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.02)


def _launch(isolation: _Isolation, config: SandboxConfig, job: dict, stdin: bytes | None, timeout_s: float) -> _Raw:
    """Run sandbox_child.py with `job` under `isolation`; never raises for anything the code does."""
    mode, python = isolation.mode, isolation.python
    result_cap = 4096 + 8 * len(job.get("tests", ()))  # an honest result line is far shorter
    root = os.geteuid() == 0
    uid = config.uid if root else os.getuid()
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(tempfile.TemporaryFile(prefix="wgrpo-sandbox-"))
                 for name in ("job", "stdin", "stdout", "stderr", "result")}
        files["job"].write(json.dumps(dict(job, result_fd=files["result"].fileno())).encode())
        files["job"].seek(0)
        files["stdin"].write(stdin or b"")
        files["stdin"].seek(0)
        env = {"PATH": _PATH}
        workdir = "/"
        if mode != "bwrap":
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="wgrpo-sandbox-",
                                                                      ignore_cleanup_errors=True))
            if root:
                os.chown(workdir, config.uid, config.gid)
            os.chmod(workdir, 0o700)
            env.update(HOME=workdir, TMPDIR=workdir, LANG="C.UTF-8")
        prefix = {"bwrap": lambda: _bwrap_argv(config, isolation.tool, python),
                  # /bin/sh is the namespace's init, so that the code is not pid 1 (immune to its own signals)
                  "unshare": lambda: [isolation.tool, "--user", "--net", "--pid", "--fork", "--kill-child", "--",
                                      "/bin/sh", "-c", '"$@"; exit $?', "sh"],
                  "limits": lambda: []}[mode]()
        argv = [python, "-I", "-S", "-B", "-c", _LIMITER, json.dumps(_limits(config, uid)), *prefix,
                python, "-I", "-B", "-c", _CHILD_SOURCE, str(files["job"].fileno())]
        extra = {"user": config.uid, "group": config.gid, "extra_groups": []} if root else {}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=files["stdin"], stdout=files["stdout"], stderr=files["stderr"],
                                    pass_fds=(files["job"].fileno(), files["result"].fileno()), cwd=workdir,
                                    env=env, start_new_session=True, **extra)
        except (OSError, subprocess.SubprocessError) as error:
            return _Raw(None, False, "", "", b"", 0.0, error=f"sandbox unavailable: {error}"[:200])
        try:
            timed_out = _wait(proc, timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the code's leftovers, in time or not
            returncode = proc.wait()
        wall_s = time.monotonic() - start
        files["result"].seek(0)
        return _Raw(returncode, timed_out, _tail(files["stdout"], config.output_bytes),
                    _tail(files["stderr"], config.output_bytes), files["result"].read(result_cap + 1), wall_s)


def _probe(isolation: _Isolation, config: SandboxConfig) -> str | None:
    """None when `isolation` runs a trivial program correctly here, else a short reason."""
    raw = _launch(isolation, config, {"mode": "script", "code": "print('ok')"}, None, 30.0)
    if raw.error or raw.returncode != 0 or raw.stdout.strip() != "ok":
        reason = raw.error or (raw.stderr.strip().splitlines() or [f"exit status {raw.returncode}"])[-1]
        if isolation.mode == "bwrap" and "nknown option" in reason:
            reason += " (needs bubblewrap >= 0.8 for --size and --disable-userns)"
        return reason[:200]
    return None


def _isolation_for(config: SandboxConfig) -> _Isolation:
    # the executables are found here, outside the cache, so that a changed PATH is a new configuration
    return _choose(config, _resolve_python(config), shutil.which(config.bwrap), shutil.which(config.unshare))


@functools.lru_cache(maxsize=32)
def _choose(config: SandboxConfig, python: str, bwrap: str | None, unshare: str | None) -> _Isolation:
    """The first mode of `config.isolation`'s candidates that passes its probe, else "unavailable"."""
    if not os.access(python, os.X_OK):
        return _Isolation("unavailable", python, "", f"interpreter {python} is not executable")
    tools = {"bwrap": (bwrap, config.bwrap), "unshare": (unshare, config.unshare), "limits": ("", "")}
    reasons = []
    for mode in _CANDIDATES[config.isolation]:
        tool, name = tools[mode]
        if tool is None:
            reason = f"{name!r} not found" + (" on PATH" if os.sep not in name else "")
        else:
            reason = _probe(_Isolation(mode, python, tool, ""), config)
        if reason is None:
            chosen = _Isolation(mode, python, tool, "; ".join(reasons))
            if mode in _WEAKER:
                why = f" ({chosen.detail})" if chosen.detail else ""
                log.warning("sandbox %r%s: %s isolation only: %s", config.isolation, why, mode,
                            _WEAKER[mode].format(user=_user(config)))
            return chosen
        reasons.append(f"{mode}: {reason}")
    return _Isolation("unavailable", python, "", "; ".join(reasons))


# what the weaker modes leave open, for their warning
_WEAKER = {"unshare": "no network and its own pid namespace, but the host's files are readable wherever {user} "
                      "may read them",
           "limits": "resource limits alone: the network is OPEN and the host's files are readable (and writable) "
                     "wherever {user} may; a process that calls setsid() can outlive its run"}


def _user(config: SandboxConfig) -> str:
    return f"uid {config.uid}" if os.geteuid() == 0 else f"this user (uid {os.getuid()})"


@functools.lru_cache(maxsize=32)
def _warn_unavailable(isolation: _Isolation) -> None:
    """Say once per cause that no model code runs (check_sandbox raises instead of warning)."""
    log.warning("sandbox unavailable (%s): no model code runs, every code reward is 0", isolation.detail)


def check_sandbox(config: SandboxConfig | None = None) -> str:
    """The isolation model code runs under here, "bwrap", "unshare" or "limits" (probed once per config).

    Raises `wgrpo.engine.InputError` in one line naming the isolation that is missing and how to get it when
    `config.isolation` cannot run here; call it before any long work starts.
    """
    config = SandboxConfig() if config is None else config
    if not isinstance(config, SandboxConfig):
        raise TypeError(f"config must be a SandboxConfig, got {type(config).__name__}")
    isolation = _isolation_for(config)
    if isolation.mode != "unavailable":
        return isolation.mode
    if not os.access(isolation.python, os.X_OK):
        raise input_error(f"sandbox: interpreter {isolation.python} is not executable: set SandboxConfig.python "
                          f"to a Python 3 interpreter that {_user(config)} may execute")
    weaker = "or pass --sandbox limits to accept resource limits alone (network open, host files readable)"
    needs = {"auto": ("bubblewrap or unshare isolation, and neither works here", "install bubblewrap (apt-get "
                      f"install bubblewrap), {weaker}"),
             "bwrap": ("bubblewrap isolation", f"install it (apt-get install bubblewrap), {weaker}"),
             "unshare": ("unshare isolation (unprivileged user namespaces)",
                         f"pass --sandbox bwrap after apt-get install bubblewrap, {weaker}"),
             "limits": ("resource limits, which cannot start a program here", "check SandboxConfig's limits")}
    wanted, fix = needs[config.isolation]
    raise input_error(f"sandbox {config.isolation!r} needs {wanted} ({isolation.detail}): {fix}")


def _failure(raw: _Raw, config: SandboxConfig) -> tuple[str, bool]:
    """(error, timed_out) for a run that left no valid result."""
    if raw.error:
        return raw.error, False
    if raw.timed_out:
        return "timeout", True
    rc = raw.returncode or 0
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0  # an init (bwrap's, sh) reports signal N as 128 + N
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and raw.wall_s >= config.cpu_s * 0.9):
        return "cpu time limit", True
    if "MemoryError" in raw.stderr or "Cannot allocate memory" in raw.stderr:
        return "memory", False
    if sig == signal.SIGXFSZ:
        return "file size limit", False
    if sig:
        return f"killed by {signal.Signals(sig).name}" if sig in signal.valid_signals() else f"signal {sig}", False
    return ("no result" if rc == 0 else f"crashed (exit {rc})"), False


def _parse_result(data: bytes, nonce: str, total: int) -> tuple[int, str | None] | None:
    """(passed, error) from the child's one result line, or None when it is not exactly what we expect."""
    if not data.endswith(b"\n") or data.count(b"\n") != 1:
        return None
    try:
        result = json.loads(data)
    except ValueError:
        return None
    if not isinstance(result, dict) or set(result) != {"nonce", "results", "error"} or result["nonce"] != nonce:
        return None
    passes, error = result["results"], result["error"]
    if not isinstance(passes, list) or len(passes) != total or not all(p is True or p is False for p in passes):
        return None
    if error is not None and not (isinstance(error, str) and _ERROR.fullmatch(error)):
        return None
    return sum(passes), error


def run_tests(code: str, tests: Sequence[str], timeout_s: float | None = None, *,
              config: SandboxConfig | None = None) -> SandboxResult:
    """Run `code` once, then each test (an assert line or a small block) in the code's namespace; count passes.

    A test passes when it runs without raising. `timeout_s` (default `config.timeout_s`, 5 s) bounds the whole
    run in wall-clock time; a timeout scores 0 even when some tests had passed. Never raises for anything the
    code does; raises TypeError/ValueError for bad arguments.
    """
    config = SandboxConfig() if config is None else config
    if not isinstance(config, SandboxConfig):
        raise TypeError(f"config must be a SandboxConfig, got {type(config).__name__}")
    if not isinstance(code, str):
        raise TypeError(f"code must be str, got {type(code).__name__}")
    if isinstance(tests, str) or not isinstance(tests, Sequence):
        raise TypeError(f"tests must be a list of str, got {type(tests).__name__}")
    if not tests:
        raise ValueError("tests must not be empty")
    for i, test in enumerate(tests):
        if not isinstance(test, str):
            raise TypeError(f"tests[{i}] must be str, got {type(test).__name__}")
        try:
            compile(test, f"<tests[{i}]>", "exec")
        except (SyntaxError, ValueError) as error:
            raise ValueError(f"tests[{i}] is not valid Python: {error}") from None
    timeout = _check_timeout(config.timeout_s if timeout_s is None else timeout_s, "timeout_s")
    isolation = _isolation_for(config)
    if isolation.mode == "unavailable":
        _warn_unavailable(isolation)
        return SandboxResult(0, len(tests), error="sandbox unavailable", isolation=isolation.mode)
    nonce = secrets.token_hex(16)
    job = {"mode": "tests", "code": code, "tests": list(tests), "nonce": nonce}
    raw = _launch(isolation, config, job, None, timeout)
    parsed = None if raw.timed_out or raw.error else _parse_result(raw.result, nonce, len(tests))
    if parsed is None:
        error, timed_out = _failure(raw, config)
        if error == "no result" and raw.result:
            error = "bad result"
        passed = 0
    else:
        (passed, error), timed_out = parsed, False
    return SandboxResult(passed, len(tests), timed_out, error, raw.stdout, raw.stderr, isolation.mode, raw.wall_s)


def run_code(code: str, stdin: str | bytes | None = None, timeout_s: float | None = None, *,
             config: SandboxConfig | None = None) -> CodeResult:
    """Run `code` as a script (`__name__ == "__main__"`) with `stdin`; the exit status and output tails.

    The exit status is the interpreter's (1 for an uncaught exception); under bwrap a death by signal N shows
    as 128 + N. `error` names a timeout, the CPU or memory limit, a signal, or an unavailable sandbox.
    """
    config = SandboxConfig() if config is None else config
    if not isinstance(config, SandboxConfig):
        raise TypeError(f"config must be a SandboxConfig, got {type(config).__name__}")
    if not isinstance(code, str):
        raise TypeError(f"code must be str, got {type(code).__name__}")
    if stdin is not None and not isinstance(stdin, (str, bytes)):
        raise TypeError(f"stdin must be str, bytes or None, got {type(stdin).__name__}")
    timeout = _check_timeout(config.timeout_s if timeout_s is None else timeout_s, "timeout_s")
    isolation = _isolation_for(config)
    if isolation.mode == "unavailable":
        _warn_unavailable(isolation)
        return CodeResult(None, error="sandbox unavailable", isolation=isolation.mode)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    raw = _launch(isolation, config, {"mode": "script", "code": code}, data, timeout)
    error, timed_out = (None, False) if raw.returncode == 0 and not raw.timed_out else _failure(raw, config)
    if error is not None and error.startswith("crashed"):
        error = None  # a nonzero exit status is the program's own answer, not a sandbox event
    return CodeResult(None if raw.timed_out or raw.error else raw.returncode, raw.stdout, raw.stderr, timed_out,
                      error, isolation.mode, raw.wall_s)


def sandbox_status(config: SandboxConfig | None = None) -> str:
    """One line saying which isolation runs model code here (probes on first call), for logs and `devices`."""
    config = SandboxConfig() if config is None else config
    isolation = _isolation_for(config)
    user = f"uid {config.uid}" if os.geteuid() == 0 else f"current user (uid {os.getuid()})"
    limits = (f"limits: {config.memory_mb} MiB memory, {config.cpu_s} s CPU, {config.file_size_mb} MiB files, "
              f"{config.open_files} files open, {config.processes} processes, {config.timeout_s:g} s wall")
    what = {"bwrap": "bubblewrap: no network, read-only system, private tmpfs /work and /tmp",
            "unshare": "unshare: no network, own pid namespace; host files guarded by permissions only",
            "limits": "limits only: network OPEN, host files guarded by permissions only",
            "unavailable": "UNAVAILABLE: no model code runs, every code run scores 0"}[isolation.mode]
    why = f" ({isolation.detail})" if isolation.detail else ""
    return (f"sandbox {isolation.mode} (asked for {config.isolation}){why}: {what}; {user}, python "
            f"{isolation.python}; {limits}")

