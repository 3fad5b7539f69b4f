"""Where an actor finds the run's starting model: a directory this node has, else a Hub id resolved through this
node's own cache (so a multi-node run needs only output_dir shared). No Ray, no network."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from wgrpo.rl.cluster.roles import on_this_node
from tests.engine.test_hub import MODEL_FILES, cache, no_network, write_snapshot  # noqa: F401 - fixtures

pytest.importorskip("huggingface_hub", reason="the hub extra is not installed")


def test_a_hub_start_the_driver_resolved_elsewhere_is_resolved_again_here(cache, tmp_path):
    snapshot = write_snapshot(cache, "org/tiny", MODEL_FILES)
    config = SimpleNamespace(model="org/tiny")
    assert on_this_node(str(tmp_path / "another-node" / "snapshot"), config) == str(snapshot)


def test_a_directory_this_node_has_and_a_local_model_are_kept(cache, tmp_path):
    assert on_this_node(str(tmp_path), SimpleNamespace(model="org/tiny")) == str(tmp_path)
    missing = str(tmp_path / "gone")
    assert on_this_node(missing, SimpleNamespace(model=str(tmp_path / "local-model"))) == missing
    assert on_this_node("", SimpleNamespace(model="org/tiny")) == ""


def test_the_commit_the_driver_resolved_is_the_one_every_node_loads(cache, tmp_path):
    # the driver's start is .../snapshots/<commit>; this node's cache has that commit and a newer main
    old = write_snapshot(cache, "org/tiny", MODEL_FILES, commit="a" * 40, ref=None)
    write_snapshot(cache, "org/tiny", {**MODEL_FILES, "config.json": b'{"model_type": "llama"}'}, commit="b" * 40)
    elsewhere = tmp_path / "driver" / "snapshots" / ("a" * 40)
    assert on_this_node(str(elsewhere), SimpleNamespace(model="org/tiny")) == str(old)
