"""Shared fixtures: the device under test, skipped with a reason when no adapter exists."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

# No test may reach the Hugging Face Hub: a model id is only ever resolved from a cache the test builds.
os.environ["HF_HUB_OFFLINE"] = "1"
# Kernel choices tuned while the tests run (on an adapter the shipped table does not cover) stay out of the
# user's cache directory.
os.environ["WGRPO_CACHE_DIR"] = tempfile.mkdtemp(prefix="wgrpo-test-cache-")
atexit.register(shutil.rmtree, os.environ["WGRPO_CACHE_DIR"], ignore_errors=True)

@pytest.fixture(scope="session")
def device():
    from wgrpo.engine.device import NoAdapterError, get_device

    try:
        return get_device()
    except NoAdapterError as error:
        pytest.skip(f"no GPU adapter: {error}")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(items):
    """Tests on a local Ray are marked `ray` (scripts/test.sh runs them in its first pass only)."""
    for item in items:
        if "local_ray" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def local_ray(device):
    """A real local Ray for the scale-out tests: 2 CPUs, no GPUs, on loopback only, shared by the tests."""
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
