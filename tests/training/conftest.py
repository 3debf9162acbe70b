"""The training tests' shared run: one single-process U-Net trained on the learnable shards, once per session."""

from __future__ import annotations

import pytest

from tests.helpers import LEARN, LEARN_EPOCHS


@pytest.fixture(scope="session")
def learned_unet(learnable_shards, tmp_path_factory: pytest.TempPathFactory):
    """The JobResult of ``train(learnable_shards, epochs=LEARN_EPOCHS, patience=0, **LEARN)`` in one process: the
    held-out F1 test checks it, the distributed test compares two workers' run of the same job with it."""
    from geoseg_batch import train

    return train(data=learnable_shards, out=tmp_path_factory.mktemp("learned") / "run", epochs=LEARN_EPOCHS,
                 patience=0, **LEARN)
