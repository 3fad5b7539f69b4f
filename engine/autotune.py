"""Per-adapter autotuning: which variant of an op is fastest on this adapter, measured once and remembered.

An op with several kernels (matmul's register-blocked, subgroup and workgroup-tiled variants; attention's serial
tiled and subgroup ones) asks `choose` for a shape class (layout, dtypes and sizes rounded up to powers of two). The
first time a class is seen on an adapter, every eligible variant runs on the actual shape, is checked against
the op's readable spec (its naive variant) and timed; the fastest correct one wins. Winners are kept per adapter
(name, backend, driver, wgpu version) and kernel sources (a fingerprint of the WGSL files: results measured on
other kernels are dropped) in `autotune.json` in the user cache directory ($WGRPO_CACHE_DIR, else
$XDG_CACHE_HOME/wgrpo or ~/.cache/wgrpo; %LOCALAPPDATA%\\wgrpo on Windows, ~/Library/Caches/wgrpo on macOS) and
reused by every later run. A table shipped with wgrpo (`engine.autotune_tables`) covers Mesa's lavapipe, so CI and
CPU-only users never tune; classes it lacks fall back to coarser ones there ("NT|f32/f32|a4|m8": any N and K).
`WGRPO_AUTOTUNE=0` turns tuning at first use off (the shipped table, else each op's default); `wgrpo bench
--autotune` tunes a standard set of classes explicitly and prints the table.

Owns: the shape-class keys, the cache file, the timing and the correctness check. Knows nothing about any op:
the op hands in its candidates as functions that record one call. Must not import `rl`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

CACHE_DIR_VAR = "WGRPO_CACHE_DIR"
AUTOTUNE_VAR = "WGRPO_AUTOTUNE"
CACHE_FILE = "autotune.json"
FORMAT = 1
TRIAL_SECONDS = 0.02  # a timed trial records calls until about this long
TRIALS = 3


def size_bucket(n: int) -> int:
    """n rounded up to a power of two (1, 2, 4, ...): sizes in one bucket share a tuning result."""
    return 1 << max(0, int(n) - 1).bit_length()


def fallbacks(shape_class: str) -> list[str]:
    """`shape_class` and its coarser forms, finest first: "NT|f32/f32|a4|m8|n512" -> ..., "NT|f32/f32", "NT", "*"."""
    parts = shape_class.split("|")
    return ["|".join(parts[:n]) for n in range(len(parts), 0, -1)] + ["*"]


def cache_dir() -> Path:
    """Where wgrpo keeps per-user caches (see the module docstring)."""
    if os.environ.get(CACHE_DIR_VAR):
        return Path(os.environ[CACHE_DIR_VAR])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "wgrpo"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "wgrpo"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wgrpo"


@functools.lru_cache(maxsize=None)
def kernels_fingerprint() -> str:
    """A short hash of every WGSL source shipped in `kernels/` and of the registry that specializes them: a result
    measured on other kernels is stale."""
    import wgrpo.kernels

    digest = hashlib.sha256()
    folder = Path(wgrpo.kernels.__file__).parent
    for path in [*sorted(folder.glob("*.wgsl")), folder / "registry.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def adapter_key(device) -> str:
    """What a tuning result is valid for: the adapter, its backend and driver, wgpu's version and the kernels
    (their fingerprint: after an upgrade that changes a kernel, every class is measured again; `/wide` when they
    read f32 quads as 64-bit words)."""
    import wgpu

    s = device.summary
    wide = "/wide" if getattr(device, "wide_reads", False) else ""
    return f"{s.name} | {s.backend} | {s.driver} | wgpu {wgpu.__version__} | kernels {kernels_fingerprint()}{wide}"


def _same_adapter(key: str, other: str) -> bool:
    """Whether two keys name the same adapter, driver and wgpu, whatever their kernels."""
    return key.split(" | kernels ")[0] == other.split(" | kernels ")[0]


@dataclass
class Candidate:
    """One variant of an op for one problem: `run()` records one call and returns its output tensor."""

    name: str
    run: Callable[[], object]


@dataclass
class Problem:
    """What `choose` tunes: the op, the shape class, the candidates, and the spec they are checked against
    (`reference()` gives the expected numpy array; outputs must match within rtol/atol)."""

    op: str
    shape_class: str
    candidates: list[Candidate]
    reference: Callable[[], np.ndarray]
    rtol: float = 1e-4
    atol: float = 1e-5
    default: str = ""  # what to use when tuning is off and no table knows the class


@dataclass
class Trial:
    """A candidate's result in one tuning: seconds per call (None when it failed its check) and why not."""

    name: str
    seconds: float | None
    problem: str = ""


@dataclass
class TuningResult:
    op: str
    shape_class: str
    winner: str
    trials: list[Trial] = field(default_factory=list)


def tuning_enabled() -> bool:
    return os.environ.get(AUTOTUNE_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


class Autotuner:
    """The tuning table of one device: what was measured here (cached on disk) over the shipped table."""

    def __init__(self, device, path: Path | None = None, shipped: dict | None = None):
        from wgrpo.engine.autotune_tables import shipped_table

        self.device = device
        self.key = adapter_key(device)
        self.path = Path(path) if path is not None else cache_dir() / CACHE_FILE
        self.shipped = shipped_table(device) if shipped is None else shipped
        self.measured: dict[str, dict[str, str]] = self._load()
        self._memo: dict[tuple[str, str], str] = {}
        self.tunings = 0  # tunings run by this object (tests, reports)

    # ------------------------------------------------------------------ the table

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            print(f"wgrpo: ignoring the autotuning cache {self.path}: {error}", file=sys.stderr)
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            print(f"wgrpo: ignoring the autotuning cache {self.path}: not format {FORMAT}", file=sys.stderr)
            return {}
        table = data.get("adapters", {}).get(self.key, {})
        return {op: dict(classes) for op, classes in table.items() if isinstance(classes, dict)}

    def _save(self) -> None:
        """Write this adapter's table into the cache file, keeping other adapters' entries (atomic replace)."""
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                data = {}
        except (OSError, ValueError):
            data = {}
        adapters = data.get("adapters", {}) if isinstance(data.get("adapters"), dict) else {}
        # this adapter's results for other kernels are stale: replaced, not kept beside the new ones
        adapters = {key: table for key, table in adapters.items() if not _same_adapter(key, self.key)}
        adapters[self.key] = self.measured
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".autotune-", suffix=".json",
                                             delete=False) as f:
                json.dump({"format": FORMAT, "adapters": adapters}, f, indent=1, sort_keys=True)
            os.replace(f.name, self.path)
        except OSError as error:  # a read-only home: the results stay in memory for this run
            print(f"wgrpo: could not write the autotuning cache {self.path}: {error}", file=sys.stderr)

    def lookup(self, op: str, shape_class: str) -> str | None:
        """The variant measured here for this class, else the shipped table's for it or a coarser class."""
        measured = self.measured.get(op, {})
        if shape_class in measured:
            return measured[shape_class]
        shipped = self.shipped.get(op, {})
        for key in fallbacks(shape_class):
            if key in shipped:
                return shipped[key]
        return None

    def choose(self, problem_of: Callable[[], Problem], op: str, shape_class: str, default: str) -> str:
        """The variant for `shape_class`: from the tables, else tuned now (`problem_of()` builds the problem only
        then), else `default` when tuning is off."""
        memo = self._memo.get((op, shape_class))
        if memo is not None:
            return memo
        name = self.lookup(op, shape_class)
        if name is None:
            name = self.tune(problem_of()).winner if tuning_enabled() else default
        self._memo[(op, shape_class)] = name
        return name

    # ------------------------------------------------------------------ tuning

    def tune(self, problem: Problem, save: bool = True) -> TuningResult:
        """Check and time every candidate of `problem`; record and return the fastest correct one."""
        from wgrpo.engine.profiler import paused

        with paused(self.device.runtime):  # a kernel profile would time each dispatch apart
            trials = self._trials(problem)
        timed = [t for t in trials if t.seconds is not None]
        if not timed:
            problems = "; ".join(f"{t.name}: {t.problem}" for t in trials)
            raise RuntimeError(f"autotune {problem.op} {problem.shape_class}: no candidate passed its check ({problems})")
        winner = min(timed, key=lambda t: t.seconds).name
        self.measured.setdefault(problem.op, {})[problem.shape_class] = winner
        self._memo[(problem.op, problem.shape_class)] = winner
        self.tunings += 1
        if save:
            self._save()
        return TuningResult(problem.op, problem.shape_class, winner, trials)

    def _trials(self, problem: Problem) -> list[Trial]:
        """Each candidate checked against the problem's reference, then timed; a failing one keeps its problem."""
        expected = problem.reference()
        trials = []
        for candidate in problem.candidates:
            try:
                got = _to_numpy(candidate.run())
                if got.shape != expected.shape:
                    raise ValueError(f"shape {got.shape}, expected {expected.shape}")
                if not np.allclose(got, expected, rtol=problem.rtol, atol=problem.atol):
                    worst = float(np.max(np.abs(got - expected)))
                    raise ValueError(f"differs from the reference by up to {worst:.3g}")
                trials.append(Trial(candidate.name, self._time(candidate.run)))
            except Exception as error:  # a variant the adapter rejects, or a wrong one, is simply not chosen
                trials.append(Trial(candidate.name, None, f"{type(error).__name__}: {error}"))
        return trials

    def _time(self, run: Callable[[], object]) -> float:
        """Seconds per call: calls recorded into one submit, timed to the GPU's completion; best of TRIALS."""
        runtime = self.device.runtime
        runtime.synchronize()
        start = time.perf_counter()
        run()
        runtime.synchronize()
        once = max(time.perf_counter() - start, 1e-6)
        repeat = max(1, min(200, int(TRIAL_SECONDS / once)))
        best = float("inf")
        for _ in range(TRIALS):
            outputs = [run() for _ in range(repeat)]  # recorded, not yet submitted
            start = time.perf_counter()
            runtime.synchronize()
            best = min(best, (time.perf_counter() - start) / repeat)
            del outputs
        return best

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(op, shape class, variant, where from: "measured" or "shipped") for printing."""
        rows = [(op, c, v, "measured") for op, classes in sorted(self.measured.items()) for c, v in sorted(classes.items())]
        rows += [(op, c, v, "shipped") for op, classes in sorted(self.shipped.items()) for c, v in sorted(classes.items())
                 if c not in self.measured.get(op, {})]
        return rows


def _to_numpy(output) -> np.ndarray:
    return np.asarray(output.numpy() if hasattr(output, "numpy") else output, dtype=np.float64)


_tuners: dict[int, Autotuner] = {}
_lock = threading.Lock()


def autotuner(device) -> Autotuner:
    """The device's tuner (one per device, created on first use)."""
    with _lock:
        tuner = _tuners.get(id(device))
        if tuner is None or tuner.device is not device:
            tuner = _tuners[id(device)] = Autotuner(device)
        return tuner
