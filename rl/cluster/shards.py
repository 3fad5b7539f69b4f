"""How a sampling round's problems are cut among the processes that sample them: whole groups, in order.

Pure Python. Each process samples a contiguous run of problems, all group_size samples of each, keyed by their
global sequence indices, so the completions do not depend on how many processes there are.
"""

from __future__ import annotations


def shard_ranges(problems: int, shards: int) -> list[tuple[int, int]]:
    """(start, stop) problem ranges of `shards` contiguous parts of `problems`, sizes differing by at most one
    (the smaller first: the first is the learner's, which also updates); parts beyond the problems are empty
    (the first ones)."""
    if shards < 1:
        raise ValueError(f"shard_ranges: shards must be at least 1, got {shards}")
    size, extra = divmod(problems, shards)
    ranges, start = [], 0
    for index in range(shards):
        stop = start + size + (index >= shards - extra)
        ranges.append((start, stop))
        start = stop
    return ranges
