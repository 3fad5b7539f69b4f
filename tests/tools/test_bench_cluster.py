"""`wgrpo bench --grpo --quick --rollout-workers 1` on a real local Ray: the scaled-out step by phase, the weight
sync's bytes, and the projection; the projection's model by hand."""

from __future__ import annotations

import json

import pytest

from wgrpo.tools import cli
from wgrpo.tools.bench_cluster import LINKS, project_step
from tests.tools.test_bench_grpo import TINY


def test_quick_run_on_ray(local_ray, device, tmp_path, capsys):
    path = tmp_path / "grpo.json"
    # --quick's 2 prompts over the learner and 1 worker: one prompt each
    code = cli.main(["bench", "--grpo", "--quick", "--rollout-workers", "1", "--json", str(path), *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(path.read_text())
    cluster, comparison = report["cluster"], report["cluster_comparison"]
    assert (cluster["workers"], cluster["schedule"]) == (1, "synchronous") and len(cluster["steps"]) == 2
    parameters = report["model"]["num_parameters"]
    assert cluster["weight_bytes"] == 4 * parameters  # float32 full fine-tuning: every weight, once per worker
    assert all(step["sync_bytes"] == cluster["weight_bytes"] for step in cluster["steps"])
    med = cluster["median"]
    assert med["sync_s"] > 0 and cluster["sync_bytes_per_s"] == pytest.approx(cluster["weight_bytes"] / med["sync_s"])
    assert all(s["total_s"] >= s["sample_s"] + s["update_s"] - 1e-9 for s in cluster["steps"])
    assert med["sample_s"] >= med["rollout_s"] and med["update_s"] >= med["learner_update_s"]
    assert [(row["gpus"], row["link"]) for row in comparison["projection"]][:2] == [(1, "1 GbE"), (4, "1 GbE")]
    assert "on Ray: learner on" in captured.out and "weight sync:" in captured.out


def test_the_projection_by_hand():
    mib = 2**20
    # one GPU: the step as measured
    assert project_step(6.0, 2.0, 100 * mib, 1, link_bytes_per_s=1.0, node_bytes_per_s=1.0) == 8.0
    # 4 GPUs on 4 nodes: rollout / 4 + 3 copies over the link + one on-node sync + the update
    rate, node = 10 * mib, 100 * mib
    synchronous = project_step(6.0, 2.0, 100 * mib, 4, link_bytes_per_s=rate, node_bytes_per_s=node)
    assert synchronous == pytest.approx(6.0 / 4 + 3 * 10.0 + 1.0 + 2.0)
    # asynchronous: the 3 workers sample while the learner updates
    asynchronous = project_step(6.0, 2.0, 100 * mib, 4, link_bytes_per_s=rate, node_bytes_per_s=node,
                                asynchronous=True)
    assert asynchronous == pytest.approx(max(6.0 / 3 + 31.0, 2.0))
    # 8 GPUs on one node: no link crossed
    assert project_step(6.0, 2.0, 100 * mib, 8, link_bytes_per_s=rate, node_bytes_per_s=node,
                        gpus_per_node=8) == pytest.approx(6.0 / 8 + 1.0 + 2.0)
    assert set(LINKS) == {"1 GbE", "10 GbE", "100 GbE"}


def test_the_readmes_projection_is_what_the_model_prints():
    from pathlib import Path

    from wgrpo.tools.bench_cluster import lora_parameters, readme_table, QWEN

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert readme_table() in readme
    assert lora_parameters(QWEN["Qwen2.5-0.5B"]) == 8_798_208  # 35.2 MB of f32 adapters
