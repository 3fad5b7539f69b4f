"""A real local Ray for the scale-out tests: 2 CPUs, no GPUs, on loopback only, shared by the tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def local_ray(device):
    # before Ray is imported (it reads them into constants) and starts its processes (which inherit them):
    # every address on loopback, no usage reporting
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'wgrpo[ray]')")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()
