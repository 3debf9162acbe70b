"""A run's stage seconds: where the tiles phase's thread time went (read, normalize, model, write)."""

from __future__ import annotations

import pytest

from geoseg_batch import predict_scene
from geoseg_batch.infer.stages import STAGES, StageClock, StageSeconds, stage_totals

from tests.helpers import local_client, make_bundle, write_scene


def test_stage_seconds_add_up_and_split():
    clock = StageClock()
    with clock.timing("model"):
        sum(range(10_000))
    total = clock.total()
    assert total.model > 0 and total.read == total.normalize == total.write == 0
    assert total.share(4).model == pytest.approx(total.model / 4)
    assert total.share(1) == total.share(0) == total
    both = total + StageSeconds(read=1.0, write=2.0)
    assert (both.read, both.write, both.model) == (1.0, 2.0, total.model)
    assert stage_totals([both, StageSeconds(read=0.5)])["read"] == 1.5
    with pytest.raises(KeyError):
        with clock.timing("decode"):
            pass


@pytest.mark.cluster
@pytest.mark.parametrize("stitch", ["exact", "blend"])
def test_a_run_reports_its_stage_seconds_within_its_tiles_phase(tmp_path, stitch):
    """Every stage took time, and together no more than the tiles phase's wall time on every worker thread."""
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (300, 260))
    with local_client(2, processes=False) as client:
        result = predict_scene(scene, bundle, tmp_path / stitch, tile=64, stitch=stitch, client=client)
    summary = result.summary
    stages = summary["stage_seconds"]
    assert set(stages) == set(STAGES)
    assert all(seconds > 0 for seconds in stages.values()), stages
    assert sum(stages.values()) <= 2 * summary["phases"]["tiles_s"] + 0.01
