"""Shared fixtures: the device under test, skipped with a reason when no adapter exists."""

from __future__ import annotations

import os

import numpy as np
import pytest

# No test may reach the Hugging Face Hub: a model id is only ever resolved from a cache the test builds.
os.environ["HF_HUB_OFFLINE"] = "1"

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
