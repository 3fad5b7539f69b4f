"""`wgrpo bench --profile`: where the GPU time of a model step, a generation or a GRPO phase goes, per kernel.

Owns: running one more call of what a benchmark timed under `engine.profiler.profile` (every dispatch in a
timestamped pass of its own), the report it adds to the benchmark's JSON (`profile`: GPU seconds, dispatches, rows
by kernel entry and by entry and shapes) and the table printed after the benchmark's own. The profiled call comes
after the timed ones and is not part of their figures: splitting passes slows some drivers, so read the shares.
Imports the engine lazily.
"""

from __future__ import annotations

from typing import Callable

from wgrpo.rl.errors import input_error
from wgrpo.tools.bench import _fmt

TOP_KERNELS = 15  # rows of the printed table; the JSON keeps every kernel
TOP_SHAPES = 40  # (kernel, shapes) rows kept in the JSON


def require_timestamps(device) -> None:
    """Refuse --profile before any work on an adapter without GPU timers."""
    if not device.has_timestamps:
        raise input_error(f"--profile times every dispatch with GPU timestamps; {device.name} lacks the "
                          f"timestamp-query feature")


def profiled(device, call: Callable[[], object]) -> tuple[object, dict]:
    """Run `call` once with every dispatch timed; its result and the profile's report."""
    from wgrpo.engine.profiler import profile

    with profile(device) as p:
        result = call()
    return result, {"gpu_s": p.seconds, "dispatches": p.calls, "kernels": p.rows(),
                    "shapes": p.rows(by_shape=True, top=TOP_SHAPES)}


def format_profile(title: str, report: dict, top: int = TOP_KERNELS) -> str:
    """The kernels taking the most GPU time in `report` (from `profiled`), as a table under `title`."""
    header = f"{'kernel':44s}  {'calls':>6s}  {'GPU ms':>9s}  {'ms/call':>8s}  {'share':>6s}"
    lines = [f"{title}: {report['dispatches']} dispatches, {report['gpu_s'] * 1e3:.1f} ms of GPU time",
             header, "-" * len(header)]
    for row in report["kernels"][:top]:
        per_call = row["seconds"] / row["calls"] * 1e3
        lines.append(f"{row['kernel']:44s}  {row['calls']:6d}  {_fmt(row['seconds'] * 1e3, '9.2f')}  "
                     f"{_fmt(per_call, '8.3f')}  {row['share']:6.1%}")
    rest = report["kernels"][top:]
    if rest:
        seconds = sum(row["seconds"] for row in rest)
        lines.append(f"{f'({len(rest)} more)':44s}  {sum(r['calls'] for r in rest):6d}  "
                     f"{_fmt(seconds * 1e3, '9.2f')}  {'':8s}  {seconds / max(report['gpu_s'], 1e-30):6.1%}")
    return "\n".join(lines)
