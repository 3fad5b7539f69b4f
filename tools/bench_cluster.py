"""`wgrpo bench --grpo --rollout-workers R`: the GRPO steps of `--grpo` again on Ray, with a learner actor and R
rollout actors, timed by phase from the driver, and the weight movement measured (bytes and seconds per sync);
then a paper projection of the step time on more GPUs and over slower links from the measured costs.

Owns: the scaled-out run (same start weights, tokenizer, prompts and rewards as the single-process steps the
same command timed just before), its per-phase medians, and `project_step`, the model the projection (and the
README's table) comes from:
- synchronous: step = rollout / N + sync + update, with N samplers (the learner and the workers);
- asynchronous: step = max(rollout / N_workers + sync, update) (the workers sample while the learner updates);
- sync = (nodes - 1) x weight bytes / link bandwidth across nodes (each node fetches one copy from the learner's
  node; Ray's object store serves them one after another in the worst case) + weight bytes / the measured
  on-node rate (the learner's read-back and each worker's upload).
Imports ray only through `rl.cluster`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from wgrpo.tools.bench import _progress

# Nominal payload rates of the links (90% of the line rate), bytes/s
LINKS = {"1 GbE": 0.9 * 1e9 / 8, "10 GbE": 0.9 * 10e9 / 8, "100 GbE": 0.9 * 100e9 / 8}


def save_start(trainer, directory: str) -> str:
    """The weights the steps start from, as a checkpoint the actors load (before any step changes them)."""
    trainer.model.save_pretrained(directory, trainer.tokenizer)
    return directory


def run_cluster_steps(trainer, start: str, workers: int, asynchronous: bool, warmup: int, steps: int,
                      output_dir: str, device_spec) -> dict:
    """`warmup` + `steps` GRPO steps through `rl.cluster` from the checkpoint `start`; medians of the timed ones."""
    from wgrpo.rl.cluster.driver import cluster_loop

    config = replace(trainer.config, model=start, output_dir=output_dir, rollout_workers=workers,
                     async_rollouts=int(asynchronous), steps=warmup + steps, eval_on_start=False)
    records = []
    _progress(f"Ray: a learner and {workers} rollout worker(s) ...")
    began = time.perf_counter()
    with cluster_loop(config, trainer.task, start, device_spec) as loop:
        started = time.perf_counter() - began
        for step in range(warmup + steps):
            _progress(f"Ray GRPO step {step + 1}/{warmup + steps} ...")
            t0 = time.perf_counter()
            sample = loop.sample_step(loop.step)
            t1 = time.perf_counter()
            metrics = loop.finish_step(sample)
            t2 = time.perf_counter()
            if step >= warmup:
                records.append({"total_s": t2 - t0, "sample_s": t1 - t0, "update_s": t2 - t1,
                                "rollout_s": metrics["time/rollout"], "reward_s": metrics["time/reward"],
                                "learner_update_s": metrics["time/update"],
                                "sync_s": metrics.get("time/weight_sync", 0.0),
                                "sync_bytes": metrics.get("weight_sync/bytes", 0.0)})
        learner = loop.cluster.learner_info
    med = {key: statistics.median(r[key] for r in records) for key in records[0]}
    rate = med["sync_bytes"] / med["sync_s"] if med["sync_s"] else None
    return {"workers": workers, "schedule": "asynchronous" if asynchronous else "synchronous",
            "learner_device": learner["device"], "weight_bytes": learner["trainable_bytes"], "startup_s": started, "median": med, "steps": records,
            "sync_bytes_per_s": rate}


def project_step(rollout_s: float, update_s: float, weight_bytes: float, gpus: int, *, link_bytes_per_s: float,
                 node_bytes_per_s: float, gpus_per_node: int = 1, asynchronous: bool = False) -> float:
    """Projected seconds per step on `gpus` GPUs (the module docstring's model), from one GPU's rollout and update
    seconds, the bytes of one weight sync, the link between nodes and the measured on-node sync rate."""
    if gpus <= 1:
        return rollout_s + update_s
    nodes = -(-gpus // gpus_per_node)
    sync = (nodes - 1) * weight_bytes / link_bytes_per_s + weight_bytes / node_bytes_per_s
    if asynchronous:
        return max(rollout_s / (gpus - 1) + sync, update_s)
    return rollout_s / gpus + sync + update_s


def projection_rows(rollout_s: float, update_s: float, weight_bytes: float, node_bytes_per_s: float,
                    gpus=(1, 4, 8)) -> list[tuple]:
    """(gpus, link, synchronous s, asynchronous s) for one GPU per node over each of LINKS."""
    rows = []
    for count in gpus:
        for link, rate in LINKS.items():
            rows.append((count, link,
                         project_step(rollout_s, update_s, weight_bytes, count, link_bytes_per_s=rate,
                                      node_bytes_per_s=node_bytes_per_s),
                         project_step(rollout_s, update_s, weight_bytes, count, link_bytes_per_s=rate,
                                      node_bytes_per_s=node_bytes_per_s, asynchronous=True) if count > 1 else None))
            if count == 1:
                break
    return rows


def compare(report: dict) -> dict:
    """The scaled-out step against the single-process one of the same run, and the projection from both."""
    single = report["phases"]
    cluster = report["cluster"]
    med = cluster["median"]
    one = report["total"]["seconds"]
    rollout = single["rollout"]["seconds"] + single["reward"]["seconds"]
    node_rate = cluster["sync_bytes_per_s"]
    weight_bytes = cluster["weight_bytes"]  # one worker's copy
    rows = projection_rows(rollout, single["update"]["seconds"], weight_bytes, node_rate) if node_rate else []
    return {"single_process_s": one, "cluster_s": med["total_s"], "cluster_over_single": med["total_s"] / one,
            "projection": [
                {"gpus": g, "link": link, "synchronous_s": s, "asynchronous_s": a} for g, link, s, a in rows]}


def format_cluster_report(report: dict) -> str:
    c, cmp = report["cluster"], report["cluster_comparison"]
    m = c["median"]
    rate = c["sync_bytes_per_s"]
    lines = [f"on Ray: learner on {c['learner_device']} + {c['workers']} rollout worker(s), {c['schedule']} "
             f"schedule (actors started in {c['startup_s']:.1f} s); median of {len(c['steps'])} steps",
             f"  step {m['total_s']:.4f} s = sampling {m['sample_s']:.4f} s (generation {m['rollout_s']:.4f}, "
             f"rewards {m['reward_s']:.4f}, weight sync {m['sync_s']:.4f}) + update {m['update_s']:.4f} s "
             f"(learner's own {m['learner_update_s']:.4f})",
             f"  weight sync: {m['sync_bytes'] / 2**20:.2f} MiB per step to the workers "
             f"({c['weight_bytes'] / 2**20:.2f} MiB each)"
             + (f", {rate / 2**20:.0f} MiB/s" if rate else ""),
             f"  vs one process: {m['total_s']:.4f} s against {cmp['single_process_s']:.4f} s "
             f"({cmp['cluster_over_single']:.2f}x its time; actors on one machine share its cores)"]
    if cmp["projection"]:
        lines.append("  projection (one GPU per node, this step's costs; see tools/bench_cluster.py):")
        for row in cmp["projection"]:
            asynchronous = f", async {row['asynchronous_s']:.4f} s" if row["asynchronous_s"] is not None else ""
            link = f" over {row['link']}" if row["gpus"] > 1 else ""
            lines.append(f"    {row['gpus']} GPU(s){link}: sync {row['synchronous_s']:.4f} s{asynchronous}")
    return "\n".join(lines)
