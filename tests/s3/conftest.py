"""The S3 tests' own fixtures: each test in its own working directory, a tiny bundle, the scene to upload.

The loopback S3 server itself (``s3_server``, ``s3_env``) lives in tests/s3_fixtures.py, shared with tests/stac.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.s3_fixtures import BUCKET, MISSING, S3Server  # noqa: F401  (the S3 tests import them from here)


@pytest.fixture(autouse=True)
def _working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own temporary working directory: a run writing to s3:// keeps its log file in
    ``./.geoseg-batch-logs``, which must not land in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-band model bundle."""
    from tests.helpers import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "m.keras", bands=3)


@pytest.fixture(scope="session")
def scene_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Landsat RGB sample where it is present, else a synthetic 3-band scene of about its size."""
    from tests.helpers import SHARED_DATA, write_scene

    rgb = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"
    if rgb.exists():
        return rgb
    return write_scene(tmp_path_factory.mktemp("scene") / "RGB.byte.tif", (718, 791), bands=3)
