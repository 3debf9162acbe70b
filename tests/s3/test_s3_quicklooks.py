"""The report's scene quicklook over object storage: a scene without overviews is decimated from a whole read only
when it is small (over the network that read is a download of the scene), and the store counts what it served."""

from __future__ import annotations

from geoseg_batch import report
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.report import quicklooks

from tests.helpers import write_scene


def test_a_remote_scene_without_overviews_is_not_downloaded_for_its_quicklook(tmp_path, s3_env, monkeypatch):
    scene = write_scene(tmp_path / "plain.tif", (200, 240), bands=3)  # 48,000 px, no overviews
    s3_env.upload(scene, "quicklook/plain.tif")
    CloudSettings.of().apply()
    remote = {"scene": f"/vsis3/{s3_env.bucket}/quicklook/plain.tif"}
    limit = quicklooks.QUICKLOOK_REMOTE_READ_PIXELS
    monkeypatch.setattr(quicklooks, "QUICKLOOK_REMOTE_READ_PIXELS", 10_000)
    assert report.prediction_quicklooks(remote, tmp_path / "large", max_side=64, kinds=("scene",)) == []
    assert s3_env.served("quicklook/plain.tif") < scene.stat().st_size / 2  # the header, not the pixels
    local = report.prediction_quicklooks({"scene": str(scene)}, tmp_path / "local", max_side=64, kinds=("scene",))
    assert [png.name for _, png in local] == ["plain_scene.png"]  # the local limit is the full-read one
    monkeypatch.setattr(quicklooks, "QUICKLOOK_REMOTE_READ_PIXELS", limit)
    made = report.prediction_quicklooks(remote, tmp_path / "small", max_side=64, kinds=("scene",))
    assert [png.name for _, png in made] == ["plain_scene.png"]  # small: read whole, as locally
