"""Shared fixtures: synthetic data built in tmp dirs, tiny models, TF threads set once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA, TINY_TRAIN

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytest_plugins = ["tests.s3_fixtures"]  # the loopback S3 server (s3_server, s3_env), for tests/s3 and tests/stac


def pytest_configure(config: pytest.Config) -> None:
    from geoseg_batch import logs
    from geoseg_batch.runtime import configure_tensorflow

    logs.CAPTURE_WARNINGS = False  # in-process CLI runs: pytest records their warnings, not the run's log
    with logs.native_start_up_hidden():
        configure_tensorflow(2, 2)


@pytest.fixture(scope="session")
def chips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 Landslide4Sense chips, 32x32, 14 bands."""
    from geoseg_batch.data.synthetic import write_l4s_chips

    return write_l4s_chips(tmp_path_factory.mktemp("l4s") / "chips", chips=96, bands=14, size=32, seed=3)


@pytest.fixture(scope="session")
def shards_dir(chips_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chips packed 24 per shard (4 shards), with index.json and stats.json."""
    from geoseg_batch.data.pack import pack_shards

    return pack_shards(chips_dir, tmp_path_factory.mktemp("packed") / "shards", chips_per_shard=24).out


@pytest.fixture(scope="session")
def tiny_run(shards_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The JobResult of training a depth-2, 4-filter U-Net for 2 epochs on the shards (``TINY_TRAIN``), once per
    session: the tiny bundle, and the local run the S3 training tests compare with."""
    from geoseg_batch import train

    return train(data=shards_dir, out=tmp_path_factory.mktemp("tiny") / "run", **TINY_TRAIN)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run) -> Path:
    """A depth-2, 4-filter U-Net trained for 2 epochs on the shards."""
    return Path(tiny_run.outputs[0]["bundle"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_real = pytest.mark.skip(reason=f"real sample data not found at {SHARED_DATA}")
    for item in items:
        if "realdata" in item.keywords and not SHARED_DATA.exists():
            item.add_marker(skip_real)


@pytest.fixture(scope="session")
def learnable_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 chips of 64x64x14 packed into 8 shards: enough to learn the synthetic target."""
    from geoseg_batch.data.pack import pack_shards
    from geoseg_batch.data.synthetic import write_l4s_chips

    root = tmp_path_factory.mktemp("learnable")
    chips = write_l4s_chips(root / "chips", chips=256, bands=14, size=64, seed=11)
    return pack_shards(chips, root / "shards", chips_per_shard=32).out
