"""Fixtures of the STAC tests: a real STAC API (``rustac serve``) whose Items' assets live on the loopback S3.

- ``stac_items`` (session): the three test Items (tests/stac/items.py: ``utm_multiband``, ``wgs84``,
  ``per_band``) by name, each a :class:`~tests.stac.items.SceneItem`; their assets uploaded to ``s3_server``.
- ``stac_api`` (session): :class:`~tests.stac.server.StacApi`, ``rustac serve`` on 127.0.0.1 (``.url``, the
  landing page; ``add_collection``, ``add_item``, ``delete_item``), stopped at the end of the session.
- ``stac_collection`` (per test): the id of a collection made for the test (named after it) holding the three
  Items.
- ``rgb_bundle`` (session): a tiny depth-2 model bundle whose bands are named red, green, blue.

The S3 server (``s3_server``, ``s3_env``) comes from tests/s3_fixtures.py, registered by tests/conftest.py.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA
from tests.stac.items import SceneItem, scene_items
from tests.stac.server import StacApi, rustac_command


@pytest.fixture(autouse=True)
def _working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own temporary working directory (a run's log folder must not land in the checkout)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def stac_items(s3_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SceneItem]:
    """The three test Items by name, built from ../shared/data, their assets COGs uploaded to the bucket."""
    if not SHARED_DATA.exists():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    if not (shutil.which("gdal_translate") and shutil.which("gdalbuildvrt")):
        pytest.skip("the STAC fixtures need GDAL's command-line tools (apt-get install gdal-bin)")
    return scene_items(s3_server, tmp_path_factory.mktemp("stac-items"))


@pytest.fixture(scope="session")
def stac_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StacApi]:
    """``rustac serve`` (in-memory backend) on 127.0.0.1:<free port>, answering before it is handed out."""
    command = rustac_command()
    if command is None:
        pytest.skip("the STAC tests need the rustac CLI (pip install -e '.[test]')")
    api = StacApi(tmp_path_factory.mktemp("stac-api"), command).start()
    try:
        yield api
    finally:
        api.stop()


def collection_id_of(request: pytest.FixtureRequest) -> str:
    """A collection id made from the test's name: lower case, runs of other characters turned into one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:80]


@pytest.fixture()
def stac_collection(stac_api: StacApi, stac_items: dict[str, SceneItem], request: pytest.FixtureRequest) -> str:
    """The id of a collection of the test's own, served by ``stac_api``, holding the three test Items."""
    collection_id = collection_id_of(request)
    stac_api.add_collection(collection_id, [scene.item for scene in stac_items.values()])
    return collection_id


@pytest.fixture(scope="session")
def rgb_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny depth-2 model bundle of 3 bands named red, green, blue (the test Items' eo:bands names)."""
    from tests.helpers import make_bundle

    return make_bundle(tmp_path_factory.mktemp("rgb-bundle") / "rgb.keras", bands=3, depth=2,
                       band_names=("red", "green", "blue"))
