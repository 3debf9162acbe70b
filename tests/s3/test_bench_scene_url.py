"""``bench predict --scene-url``: the bench path on a tiny scene, for its output's structure and for both sides
writing the same mask (correctness only: speed figures belong to the bench itself, never to a test)."""

from __future__ import annotations

import json

import pytest

from geoseg_batch.cli import main

from tests.helpers import write_scene
from tests.s3.conftest import MISSING

TINY = ["--tile", "128", "--repeats", "1", "--workers", "1", "--depth", "2", "--base-filters", "4"]


def _figures(capsys, path, *args: str) -> dict:
    assert main(["bench", "predict", "--json", str(path), *args, *TINY]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(path.read_text())
    assert json.loads(printed) == {k: v for k, v in figures.items() if k != "runs"}
    return figures


def _assert_side_by_side(figures: dict) -> None:
    assert [r["side"] for r in figures["runs"]] == ["remote", "local"]  # one round, remote first
    for side in ("remote", "local"):
        assert figures[f"{side}_mpx_per_s"] > 0 and figures[f"{side}_end_to_end_mpx_per_s"] > 0
    assert figures["remote_over_local"] == pytest.approx(figures["remote_mpx_per_s"] / figures["local_mpx_per_s"])
    assert len(figures["ratios_per_round"]) == 1
    digests = {r["mask_sha256"] for r in figures["runs"]}
    assert figures["warmup_run"]["side"] == "local" and figures["warmup_run"]["mask_sha256"] in digests
    assert len(digests) == 1 and figures["masks_equal"] is True, "remote and local wrote the same mask"
    assert (figures["shape"], figures["bands"], figures["tile"]) == ([160, 192], 3, 128)


@pytest.mark.skipif(bool(MISSING), reason=MISSING or "")
def test_loopback_uploads_the_scene_and_reads_it_back(tmp_path, capsys, monkeypatch,
                                                     other_moto_servers_take_any_key):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-users-own-secret")  # the loopback side must not see it
    scene = write_scene(tmp_path / "tiny.tif", (160, 192), bands=3)
    figures = _figures(capsys, tmp_path / "bench.json", "--scene-url", "loopback", "--scene", str(scene))
    _assert_side_by_side(figures)
    assert figures["scene_url"].startswith("loopback") and figures["scene_url"].endswith("/tiny.tif")
    assert figures["scene_bytes"] == scene.stat().st_size
    remote = figures["runs"][0]
    assert 0 < remote["bytes_fetched"] and remote["get_requests"] >= 1  # counted at the server
    assert figures["bytes_fetched_per_run"] == remote["bytes_fetched"]
    assert "loopback-bench-not-a-secret" not in (tmp_path / "bench.json").read_text()


def test_a_url_is_benched_against_a_downloaded_copy(tmp_path, s3_env, capsys):
    url = s3_env.upload(write_scene(tmp_path / "tiny.tif", (160, 192), bands=3), "bench/tiny.tif")
    figures = _figures(capsys, tmp_path / "bench.json", "--scene-url", url)
    _assert_side_by_side(figures)
    assert figures["scene_url"] == url and figures["scene"] == "tiny.tif"
    assert "bytes_fetched_per_run" not in figures  # only the bench's own server counts them


@pytest.mark.parametrize("args, needle", [
    (["--scene-url", "scenes/tiny.tif"], "expected a URL such as s3://"),
    (["--scene", "tiny.tif"], "only with --scene-url loopback"),
    (["--scene-url", "loopback", "--repeats", "0"], "--repeats: got 0"),
])
def test_bad_bench_arguments_are_one_line(tmp_path, capsys, args, needle):
    try:
        code = main(["bench", "predict", "--json", str(tmp_path / "b.json"), *args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and needle in line, line
    assert not (tmp_path / "b.json").exists()
