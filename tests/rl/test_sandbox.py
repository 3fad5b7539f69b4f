"""wgrpo.rl.sandbox: model code runs against tests, and cannot escape, linger, hog, or take the trainer down.

Tests that depend on an isolation mode run once per mode that works on this machine ("bwrap", "unshare",
"limits"), and skip with the probe's reason for the others. The refusals are checked for real, with a bwrap or
unshare that does not exist or a PATH without them. Everything touches only loopback and temp dirs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import socket
import time
import uuid

import pytest

from wgrpo.engine import InputError
from wgrpo.rl import sandbox
from wgrpo.rl.sandbox import (CodeResult, SandboxConfig, SandboxResult, check_sandbox, run_code, run_tests,
                              sandbox_status)

MODES = ("bwrap", "unshare", "limits")
ROOT = os.geteuid() == 0
ADD = "def add(a, b):\n    return a + b\n"


@functools.lru_cache(maxsize=None)
def _mode_problem(mode: str) -> str | None:
    try:
        check_sandbox(SandboxConfig(isolation=mode))
    except InputError as error:
        return str(error)
    return None


@pytest.fixture(params=MODES)
def mode(request, monkeypatch) -> str:
    """Run the test's sandboxed code under one isolation mode (skipped when that mode does not work here)."""
    problem = _mode_problem(request.param)
    if problem:
        pytest.skip(f"{request.param} isolation does not work here: {problem}")
    choose = sandbox._isolation_for
    monkeypatch.setattr(sandbox, "_isolation_for",
                        lambda config: choose(dataclasses.replace(config, isolation=request.param)))
    return request.param


def _missing(tool: str) -> str:
    return f"/nonexistent/{tool}-{uuid.uuid4().hex}"


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def _gone(marker: str, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while _processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- arguments and config ------------------------------------------------------------------------------------


def test_config_rejects_bad_fields():
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxConfig(memory_mb=0)
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="sometimes")
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxConfig(timeout_s=float("inf"))
    for f in dataclasses.fields(SandboxConfig):
        assert f.metadata.get("help"), f"SandboxConfig.{f.name} has no help text"


def test_bad_arguments_raise_naming_the_argument():
    with pytest.raises(TypeError, match="code"):
        run_tests(b"x = 1", ["assert x"])
    with pytest.raises(TypeError, match="tests"):
        run_tests("x = 1", "assert x")
    with pytest.raises(ValueError, match="tests"):
        run_tests("x = 1", [])
    with pytest.raises(ValueError, match=r"tests\[1\]"):
        run_tests("x = 1", ["assert x", "assert (("])
    with pytest.raises(ValueError, match="timeout_s"):
        run_tests("x = 1", ["assert x"], timeout_s=0)
    with pytest.raises(TypeError, match="stdin"):
        run_code("pass", stdin=3)


# ---- scoring ------------------------------------------------------------------------------------------------


def test_correct_code_passes_every_test(mode):
    result = run_tests(ADD, ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add('a', 'b') == 'ab'"])
    assert isinstance(result, SandboxResult)
    assert (result.passed, result.total, result.timed_out, result.error) == (3, 3, False, None)
    assert result.isolation == mode


def test_tests_are_counted_separately(mode):
    code = "def add(a, b):\n    return a + b if a >= 0 else 0\n"
    tests = ["assert add(1, 2) == 3", "assert add(-1, 5) == 4", "x = add(2, 2)\nassert x == 4", "1 / 0"]
    result = run_tests(code, tests)
    assert (result.passed, result.total, result.error) == (2, 4, None)


def test_syntax_error_scores_zero(mode):
    result = run_tests("def add(a, b) return a + b", ["assert add(1, 2) == 3"])
    assert (result.passed, result.error, result.timed_out) == (0, "syntax error", False)


def test_code_that_raises_scores_zero(mode):
    result = run_tests(ADD + "1 / 0\n", ["assert add(1, 2) == 3"])
    assert (result.passed, result.error) == (0, "runtime error: ZeroDivisionError")
    assert run_tests(ADD + "import sys\nsys.exit(3)\n", ["assert add(1, 2) == 3"]).error == "exit 3"
    assert run_tests(ADD + "import sys\nsys.exit(0)\n", ["assert add(1, 2) == 3"]).passed == 1


def test_main_block_does_not_run_and_stdin_is_empty(mode):
    code = ADD + "if __name__ == '__main__':\n    raise SystemExit(1)\n"
    assert run_tests(code, ["assert add(1, 1) == 2"]).passed == 1
    assert run_tests(ADD + "line = input()\n", ["assert add(1, 1) == 2"]).error == "runtime error: EOFError"


def test_printed_and_forged_results_do_not_count(mode):
    forged = '{"nonce": "x", "results": [true, true, true, true, true, true], "error": null}'
    code = ("import os\n"
            f"print({forged!r})\n"
            "for fd in range(3, 64):\n"
            "    try:\n"
            f"        os.write(fd, {forged!r}.encode() + b'\\n')\n"
            "    except OSError:\n"
            "        pass\n")
    result = run_tests(code, ["assert False", "assert False"])
    assert result.passed == 0
    assert result.error == "bad result"


def test_a_forgery_cannot_claim_more_than_total(mode):
    # The code runs in the same interpreter as the runner, so it can find the real nonce and result fd; the
    # parent's validation still bounds what it can claim by the number of tests.
    code = ("import json, os, sys\n"
            "frame = sys._getframe()\n"
            "while 'nonce' not in frame.f_locals:\n"
            "    frame = frame.f_back\n"
            "v = frame.f_locals\n"
            "line = json.dumps({'nonce': v['nonce'], 'results': [True] * 50, 'error': None}) + '\\n'\n"
            "os.write(v['result_fd'], line.encode())\n"
            "os._exit(0)\n")
    result = run_tests(code, ["assert False", "assert False"])
    assert result.passed == 0 and result.total == 2


# ---- limits -------------------------------------------------------------------------------------------------


def test_infinite_loop_times_out(mode):
    start = time.monotonic()
    result = run_tests("while True:\n    pass\n", ["assert True"], timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert (result.passed, result.timed_out, result.error) == (0, True, "timeout")
    assert elapsed < 1.0 + 1.5, elapsed


def test_a_looping_test_times_out_and_scores_zero(mode):
    result = run_tests(ADD, ["assert add(1, 1) == 2", "while True:\n    pass"], timeout_s=1.0)
    assert (result.passed, result.timed_out) == (0, True)


def test_cpu_limit(mode):
    config = SandboxConfig(cpu_s=1)
    result = run_tests("while True:\n    pass\n", ["assert True"], timeout_s=10.0, config=config)
    assert (result.passed, result.timed_out, result.error) == (0, True, "cpu time limit")
    assert result.wall_s < 5.0


def test_memory_hog_fails_with_memory_error(mode):
    result = run_tests("hog = bytearray(2 * 1024 ** 3)\n", ["assert len(hog) > 0"])
    assert (result.passed, result.error) == (0, "memory")
    result = run_tests(ADD, ["assert add(1, 1) == 2", "hog = bytearray(2 * 1024 ** 3)"])
    assert (result.passed, result.error) == (1, "memory")


def test_file_size_and_open_file_limits(mode):
    config = SandboxConfig(file_size_mb=1, open_files=32)
    big = "with open('big', 'wb') as f:\n    f.write(b'x' * (4 << 20))\n"
    assert run_tests(big, ["assert True"], config=config).error == "runtime error: OSError"
    many = "files = [open('f%d' % i, 'w') for i in range(100)]\n"
    assert run_tests(many, ["assert True"], config=config).error == "runtime error: OSError"


def test_background_process_is_killed_after_return(mode):
    marker = f"1000.{uuid.uuid4().int % 10 ** 9}"
    code = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\n" + ADD
    result = run_tests(code, ["assert add(1, 1) == 2"])
    assert result.passed == 1
    assert _gone(marker), "the background sleep outlived run_tests"


def test_background_process_is_killed_after_timeout(mode):
    marker = f"1000.{uuid.uuid4().int % 10 ** 9}"
    code = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\nwhile True:\n    pass\n"
    result = run_tests(code, ["assert True"], timeout_s=1.0)
    assert result.timed_out
    assert _gone(marker), "the background sleep outlived the timeout"


def test_setsid_child_is_killed(mode):
    if mode == "limits":
        pytest.skip("documented limitation: with limits alone, a process that calls setsid() escapes the "
                    "process-group kill (RLIMIT_CPU still bounds its CPU time)")
    marker = f"1000.{uuid.uuid4().int % 10 ** 9}"
    code = ("import os\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            f"    os.execvp('sleep', ['sleep', '{marker}'])\n")
    run_tests(code, ["assert True"])
    assert _gone(marker), "a setsid()-ed child outlived run_tests"


def test_fork_bomb_is_contained(mode):
    if not ROOT:
        pytest.skip("not root: the sandbox runs as this user and shares its process count, which other work "
                    "changes meanwhile; checked as root, where the code runs as its own uid")
    config = SandboxConfig(processes=16)
    code = ("import os\n"
            "for _ in range(10000):\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n")
    before = sandbox._count_processes(config.uid)
    result = run_tests(code, ["assert True"], timeout_s=2.0, config=config)
    # every forked copy that finishes the loop writes a result line: one line (a pass) or several (a "bad result")
    # depending on which copy finishes first; what must hold is that none outlives the run
    assert result.error in (None, "bad result", "timeout"), result
    deadline = time.monotonic() + 2.0
    while sandbox._count_processes(config.uid) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox._count_processes(config.uid) <= before
    assert run_tests(ADD, ["assert add(1, 1) == 2"]).passed == 1  # and the next run works


def test_huge_output_is_truncated(mode):
    config = SandboxConfig(output_bytes=1000)
    code = "import sys\nprint('x' * (8 << 20))\nsys.stderr.write('y' * (8 << 20))\nprint('END')\n"
    result = run_tests(code + ADD, ["assert add(1, 1) == 2"], config=config)
    assert result.passed == 1
    assert len(result.stdout_tail) < 1100 and result.stdout_tail.rstrip().endswith("END")
    assert result.stdout_tail.startswith("[... ") and len(result.stderr_tail) < 1100
    flood = "import sys\nwhile True:\n    sys.stdout.write('z' * 65536)\n"
    result = run_tests(flood, ["assert True"], timeout_s=2.0, config=config)
    assert result.passed == 0 and len(result.stdout_tail) < 1100  # capped by RLIMIT_FSIZE, read as a tail


# ---- isolation ----------------------------------------------------------------------------------------------


def test_cannot_write_outside_its_directory(mode, tmp_path):
    if mode != "bwrap" and not ROOT:
        pytest.skip("without bwrap and not as root, the code runs as this user and may write where it can")
    os.chmod(tmp_path, 0o755)
    targets = [str(tmp_path / "escape.txt"), f"/etc/wgrpo-escape-{uuid.uuid4().hex}",
               f"/usr/wgrpo-escape-{uuid.uuid4().hex}"]
    code = ("wrote = []\n"
            f"for path in {targets!r}:\n"
            "    try:\n"
            "        with open(path, 'w') as f:\n"
            "            f.write('escaped')\n"
            "        wrote.append(path)\n"
            "    except OSError:\n"
            "        pass\n"
            "with open('inside.txt', 'w') as f:\n"
            "    f.write('fine')\n")
    result = run_tests(code, ["assert wrote == []", "assert open('inside.txt').read() == 'fine'"])
    assert (result.passed, result.error) == (2, None)
    for path in targets:
        assert not os.path.exists(path), path


def test_world_writable_host_dirs_are_invisible_under_bwrap(mode, tmp_path):
    if mode != "bwrap":
        pytest.skip("only bwrap hides the host's files; other modes rely on file permissions")
    os.chmod(tmp_path, 0o777)
    target = tmp_path / "escape.txt"
    code = f"with open({str(target)!r}, 'w') as f:\n    f.write('escaped')\n"
    result = run_tests(code, ["assert True"])
    assert result.passed == 0 and result.error == "runtime error: FileNotFoundError"
    assert not target.exists()
    for path in ("/", "/usr", "/dev"):
        assert run_tests(f"open({path!r} + '/wgrpo-x', 'w')\n", ["assert True"]).passed == 0, path


def test_network_is_blocked(mode):
    if mode == "limits":
        pytest.skip("documented limitation: with limits alone the network is not blocked (no bwrap/unshare)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        code = ("import socket\n"
                "try:\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
                "    connected = True\n"
                "except OSError:\n"
                "    connected = False\n")
        result = run_tests(code, ["assert connected"])
        assert result.error is None
        assert result.passed == 0, "the sandboxed code reached a loopback listener of the host"


def test_parent_environment_and_memory_are_not_visible(mode, monkeypatch):
    monkeypatch.setenv("WGRPO_TEST_SECRET", "hunter2-sandbox")
    code = ("import os\n"
            "print(sorted(os.environ.items()))\n"
            "try:\n"
            f"    print(open('/proc/{os.getpid()}/environ', 'rb').read())\n"
            "except OSError as error:\n"
            "    print('denied', error)\n")
    result = run_code(code)
    assert isinstance(result, CodeResult) and result.returncode == 0, result
    assert "WGRPO_TEST_SECRET" not in result.stdout_tail
    if mode != "bwrap" and not ROOT:
        return  # as the same user without bwrap, /proc/<trainer>/environ is readable: documented
    assert "hunter2" not in result.stdout_tail


def test_runs_as_unprivileged_user(mode):
    result = run_code("import os\nprint(os.getuid(), os.getgid(), os.getgroups())")
    uid, gid = (65534, 65534) if ROOT else (os.getuid(), os.getgid())
    assert result.stdout_tail.split()[:2] == [str(uid), str(gid)], result


# ---- run_code, status, fallback -----------------------------------------------------------------------------


def test_run_code_stdin_exit_status_and_errors(mode):
    result = run_code("import sys\nprint(sys.stdin.read().upper())", stdin="hello")
    assert (result.returncode, result.stdout_tail, result.error) == (0, "HELLO\n", None)
    result = run_code("raise ValueError('boom')")
    assert result.returncode == 1 and "ValueError: boom" in result.stderr_tail and result.error is None
    assert run_code("import sys\nsys.exit(7)").returncode == 7
    result = run_code("while True:\n    pass", timeout_s=0.5)
    assert (result.returncode, result.timed_out, result.error) == (None, True, "timeout")
    assert run_code("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)").error == "killed by SIGKILL"


def test_sandbox_status_names_the_isolation():
    status = sandbox_status()
    assert status.startswith("sandbox ") and "MiB memory" in status
    assert any(f"sandbox {m}" in status for m in (*MODES, "unavailable"))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == sandbox.__name__]


def test_auto_without_bwrap_uses_unshare_and_warns_once(caplog):
    if _mode_problem("unshare"):
        pytest.skip(f"unshare isolation does not work here: {_mode_problem('unshare')}")
    missing = _missing("bwrap")
    config = SandboxConfig(bwrap=missing)
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
        caplog.clear()  # only what these runs say (probing the modes above may have warned)
        assert check_sandbox(config) == "unshare"
        first = run_tests(ADD, ["assert add(1, 1) == 2"], config=config)
        second = run_tests(ADD, ["assert add(1, 1) == 2"], config=config)
    assert first.isolation == second.isolation == "unshare" and first.passed == second.passed == 1
    [warning] = _warnings(caplog)
    assert f"bwrap: {missing!r} not found" in warning and "host's files are readable" in warning
    assert "not found" in sandbox_status(config)


def test_auto_refuses_when_neither_bwrap_nor_unshare_is_on_path(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no bwrap, no unshare
    assert shutil.which("bwrap") is None and shutil.which("unshare") is None
    with pytest.raises(InputError) as refused:
        check_sandbox(SandboxConfig())
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("sandbox 'auto' needs bubblewrap or unshare isolation, and neither works here")
    assert "bwrap: 'bwrap' not found on PATH; unshare: 'unshare' not found on PATH" in message
    assert "apt-get install bubblewrap" in message and "--sandbox limits" in message
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
        caplog.clear()  # only what these runs say (probing the modes above may have warned)
        result = run_tests(ADD, ["assert add(1, 1) == 2"])
        assert run_code("print(1)").error == "sandbox unavailable"
    assert (result.passed, result.total, result.error, result.isolation) == (0, 1, "sandbox unavailable",
                                                                             "unavailable")
    [warning] = _warnings(caplog)  # once, however many runs
    assert "no model code runs" in warning
    assert "UNAVAILABLE" in sandbox_status()
    if not _mode_problem("limits"):
        assert check_sandbox(SandboxConfig(isolation="limits", bwrap=_missing("bwrap"))) == "limits"


@pytest.mark.parametrize("isolation", ["bwrap", "unshare"])
def test_a_named_mode_never_falls_back(isolation):
    missing = _missing(isolation)
    config = SandboxConfig(isolation=isolation, **{isolation: missing})
    with pytest.raises(InputError, match=rf"sandbox '{isolation}' needs .*{missing}' not found\).*"
                                         r"apt-get install bubblewrap.*--sandbox limits"):
        check_sandbox(config)
    assert run_tests(ADD, ["assert add(1, 1) == 2"], config=config).error == "sandbox unavailable"


def test_limits_runs_only_when_asked_and_warns_once_what_is_open(caplog):
    if _mode_problem("limits"):
        pytest.skip(f"limits does not work here: {_mode_problem('limits')}")
    config = SandboxConfig(isolation="limits", bwrap=_missing("bwrap"))  # a configuration of its own
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
        caplog.clear()  # only what these runs say (probing the modes above may have warned)
        assert check_sandbox(config) == "limits"
        results = [run_tests(ADD, ["assert add(1, 1) == 2"], config=config) for _ in range(2)]
    assert [(r.passed, r.isolation) for r in results] == [(1, "limits")] * 2
    [warning] = _warnings(caplog)
    assert "sandbox 'limits'" in warning and "network is OPEN" in warning
    assert "host's files are readable" in warning


def test_unusable_interpreter_is_refused():
    config = SandboxConfig(python=_missing("python"))
    with pytest.raises(InputError, match="is not executable"):
        check_sandbox(config)
    assert run_tests(ADD, ["assert add(1, 1) == 2"], config=config).error == "sandbox unavailable"
