"""The program that runs *inside* the sandbox (see `rl.sandbox`); standard library only.

`rl.sandbox` passes this file's source to the sandboxed interpreter with `python -I -B -c SOURCE JOB_FD`.
It is also an importable module so that it can be read and linted, but nothing in the trainer calls it.

The job is a JSON object read from the file descriptor JOB_FD (then closed):
- `{"mode": "tests", "code": str, "tests": [str], "nonce": str, "result_fd": int}`: run the code once as a
  module named `__solution__` (so an `if __name__ == "__main__":` block does not run), then each test in
  its own try/except in the code's namespace, and write exactly one JSON line
  `{"nonce": ..., "results": [bool, ...], "error": str | null}` to `result_fd`. A test passes when it runs
  to the end without raising. When the code itself fails (syntax error, exception, nonzero `sys.exit`)
  no test runs and all count as failed.
- `{"mode": "script", "code": str}`: run the code as `__main__`, like `python script.py`; the exit status
  and the output are the result.

Nothing here is a security boundary: the model's code runs in this same interpreter and could forge the
result line. The parent therefore trusts the result only as far as it validates it (one line, the nonce,
exactly one boolean per test), which bounds any forgery to "all tests passed"; isolation comes from the
sandbox around this process, not from this file.
"""

from __future__ import annotations

import builtins
import json
import os
import sys

_MAX_ERROR = 80


def _error_name(error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "memory"
    if isinstance(error, RecursionError):
        return "recursion"
    return ("runtime error: " + type(error).__name__)[:_MAX_ERROR]


def _run_code(code: str, name: str) -> tuple[dict, str | None]:
    """Compile and run `code` in a fresh namespace; return (namespace, error or None)."""
    namespace = {"__name__": name, "__builtins__": builtins}
    try:
        compiled = compile(code, "<solution>", "exec")
    except MemoryError:
        return namespace, "memory"
    except Exception:  # SyntaxError, ValueError (null bytes), UnicodeError, RecursionError (deep nesting)
        return namespace, "syntax error"
    try:
        exec(compiled, namespace)
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            return namespace, "exit " + str(exit_.code)[:20]
    except BaseException as error:  # noqa: BLE001 - model code may raise anything
        return namespace, _error_name(error)
    return namespace, None


def _run_tests(job: dict) -> None:
    nonce, result_fd, tests = job["nonce"], job["result_fd"], job["tests"]
    namespace, error = _run_code(job["code"], "__solution__")
    results = [False] * len(tests)
    if error is None:
        for i, test in enumerate(tests):
            try:
                exec(compile(test, "<test %d>" % i, "exec"), namespace)
                results[i] = True
            except MemoryError:
                error = "memory"
            except BaseException:  # noqa: BLE001 - a failing assert, or anything the code raises
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the code may have closed or replaced them
            pass
    line = json.dumps({"nonce": nonce, "results": results, "error": error}) + "\n"
    os.write(result_fd, line.encode())
    os._exit(0)  # skip atexit handlers and threads the code may have left behind


def main() -> None:
    job_fd = int(sys.argv[1])
    with os.fdopen(job_fd, "rb") as job_file:
        job = json.loads(job_file.read())
    if job["mode"] == "tests":
        _run_tests(job)
    # script mode: like `python script.py`; an uncaught exception prints its traceback and exits with 1
    exec(compile(job["code"], "<solution>", "exec"), {"__name__": "__main__", "__builtins__": builtins})


if __name__ == "__main__":
    main()
