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
    # one copy over the sync's wall time: what project_step's on-node term divides one copy's bytes by
    rate = learner["trainable_bytes"] / med["sync_s"] if med["sync_s"] else None
    return {"workers": workers, "schedule": "asynchronous" if asynchronous else "synchronous",
            "learner_device": learner["device"], "weight_bytes": learner["trainable_bytes"], "startup_s": started,
            "median": med, "steps": records, "sync_bytes_per_s": rate}


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
    lines = [f"on Ray: learner on {c['learner_device']} + {c['workers']} rollout worker(s), {c['schedule']} "
             f"schedule (actors started in {c['startup_s']:.1f} s); median of {len(c['steps'])} steps",
             f"  step {m['total_s']:.4f} s = sampling {m['sample_s']:.4f} s + update {m['update_s']:.4f} s "
             f"(the learner's own {m['learner_update_s']:.4f}"
             + (", the next step sampled beside it" if c["schedule"] == "asynchronous" else "")
             + f"); sampling: generation {m['rollout_s']:.4f}, rewards {m['reward_s']:.4f}, weight sync "
               f"{m['sync_s']:.4f}",
             f"  weight sync: {m['sync_bytes'] / 2**20:.2f} MiB per step to the workers "
             f"({c['weight_bytes'] / 2**20:.2f} MiB each)"
             + (f", {m['sync_bytes'] / m['sync_s'] / 2**20:.0f} MiB/s in all" if m["sync_s"] else ""),
             f"  vs one process: {m['total_s']:.4f} s against {cmp['single_process_s']:.4f} s "
             f"({cmp['cluster_over_single']:.2f}x its time; actors on one machine share its cores)"]
    if cmp["projection"]:
        lines.append("  projection (one GPU per node, this step's costs; see tools/bench_cluster.py):")
        for row in cmp["projection"]:
            asynchronous = f", async {row['asynchronous_s']:.4f} s" if row["asynchronous_s"] is not None else ""
            link = f" over {row['link']}" if row["gpus"] > 1 else ""
            lines.append(f"    {row['gpus']} GPU(s){link}: sync {row['synchronous_s']:.4f} s{asynchronous}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the README's table

# Qwen2.5's published configs (config.json): what the projection needs of them
QWEN = {"Qwen2.5-0.5B": dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64,
                             intermediate_size=4864, vocab_size=151936, parameters=494_032_768),
        "Qwen2.5-1.5B": dict(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                             intermediate_size=8960, vocab_size=151936, parameters=1_543_714_304)}
# The assumptions of the paper projection (README): a TinyZero-sized step, an H100-class card's update at 60% of
# its f32 FMA peak, sampling at the update's rate / the rollout-to-update GFLOP/s ratio `bench --grpo` measured
# on lavapipe with its default step (1.8-1.9), and the on-node sync rate of Ray's object store measured with 2 GB of weights on one node
# (about 5.5 GB/s) combined with a PCIe read-back and upload (about 25 GB/s each way).
STEP = {"prompts": 32, "group_size": 8, "prompt_tokens": 256, "new_tokens": 512}
UPDATE_FLOPS_PER_S = 40e12
ROLLOUT_SLOWDOWN = 1.9
NODE_BYTES_PER_S = 1 / (1 / 5.5e9 + 2 / 25e9)


def lora_parameters(m: dict, r: int = 16) -> int:
    """Adapter parameters of LoRA rank r on every projection of the decoder layers (A: r x in, B: out x r)."""
    c, q, kv, inter = m["hidden_size"], m["num_heads"] * m["head_dim"], m["num_kv_heads"] * m["head_dim"], \
        m["intermediate_size"]
    per_layer = sum(r * (i + o) for i, o in ((c, q), (c, kv), (c, kv), (q, c), (c, inter), (c, inter), (inter, c)))
    return m["num_layers"] * per_layer


def one_gpu_seconds(m: dict) -> tuple[float, float]:
    """(rollout, update) seconds of STEP on one GPU under the projection's assumptions."""
    from types import SimpleNamespace

    from wgrpo.tools.bench_grpo import forward_flops

    config = SimpleNamespace(**{k: v for k, v in m.items() if k != "parameters"})
    rows, p, n = STEP["prompts"] * STEP["group_size"], STEP["prompt_tokens"], STEP["new_tokens"]
    prefill = forward_flops(config, STEP["prompts"] * p, STEP["prompts"] * p * (p + 1) // 2, head_rows=rows)
    decode = sum(forward_flops(config, rows, rows * (p + t)) for t in range(1, n))
    width = p + n - 1
    update = 4 * forward_flops(config, rows * width, rows * width * (width + 1) // 2)  # reference + fwd + bwd
    return (prefill + decode) * ROLLOUT_SLOWDOWN / UPDATE_FLOPS_PER_S, update / UPDATE_FLOPS_PER_S


# (GPUs, GPUs per node, the link between nodes) of each column after the one-GPU step
COLUMNS = [(4, 1, link) for link in LINKS] + [(8, 1, link) for link in LINKS] + [(8, 8, None)]


def readme_table() -> str:
    """The README's projection table, as markdown: seconds per step, synchronous / asynchronous."""
    lines = ["| model, weights moved | 1 GPU | 4 GPUs, 1 GbE | 10 GbE | 100 GbE | 8 GPUs, 1 GbE | 10 GbE | 100 GbE "
             "| 8 GPUs in one node |", "|" + "---|" * 9]
    for name, m in QWEN.items():
        rollout, update = one_gpu_seconds(m)
        for kind, weights in (("full f32", 4 * m["parameters"]), ("LoRA", 4 * lora_parameters(m))):
            cells = [f"{rollout + update:.1f}"]
            for gpus, per_node, link in COLUMNS:
                run = dict(link_bytes_per_s=LINKS[link] if link else 1.0, node_bytes_per_s=NODE_BYTES_PER_S,
                           gpus_per_node=per_node)
                cells.append(f"{project_step(rollout, update, weights, gpus, **run):.1f} / "
                             f"{project_step(rollout, update, weights, gpus, asynchronous=True, **run):.1f}")
            lines.append(f"| {name}, {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_table())
