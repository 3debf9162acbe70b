"""OS errors met while creating, staging and publishing an output become one line naming the path and the
fix: exit 2 where the user can fix the location, 1 (re-run resumes) for a device that filled up."""

from __future__ import annotations

import errno
import os

import pytest
import rasterio.errors

from geoseg_batch.errors import GeosegError, NoSpaceError, OutputLocationError
from geoseg_batch.io import lease
from geoseg_batch.io.oserrors import os_error_line
from geoseg_batch.io.publication import Publication
from geoseg_batch.io.storage import LocalStorage


def _publish(out) -> None:
    with Publication(out, "k1") as publication:
        (publication.stage / "a.txt").write_text("a")
        publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})


def _injected(code: int):
    def fail(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))
    return fail


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "unexpected" not in text and "Errno" not in text
    return text


def test_an_out_that_is_a_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    with pytest.raises(OutputLocationError) as failed:
        _publish(out)
    assert failed.value.exit_code == 2 and failed.value.errno == errno.ENOTDIR
    assert _one_line(failed.value) == f"{out}: is a file, not a directory; remove it or choose another --out"
    assert out.read_text() == "not a directory" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_out_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "sub" / "out"
    with pytest.raises(OutputLocationError) as failed:
        _publish(out)
    assert failed.value.exit_code == 2
    assert _one_line(failed.value).startswith(f"{out}: lies under {tmp_path / 'file'}, which is a file;")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only filesystem"), (errno.EACCES, "permission denied"),
                                         (errno.EPERM, "not permitted")])
def test_a_location_that_cannot_be_written(tmp_path, monkeypatch, code, words):
    monkeypatch.setattr(lease, "create_exclusive", _injected(code))  # as root, permission bits stop nothing
    out = tmp_path / "out"
    with pytest.raises(OutputLocationError) as failed:
        _publish(out)
    text = _one_line(failed.value)
    assert failed.value.exit_code == 2 and words in text and "--out" in text and str(tmp_path / ".out.lock") in text
    assert list(tmp_path.iterdir()) == []


def test_no_space_while_staging_says_what_is_free_and_that_a_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(LocalStorage, "write_bytes", lambda self, path, data: _injected(errno.ENOSPC)(path))
    out = tmp_path / "out"
    with pytest.raises(NoSpaceError) as failed:
        _publish(out)
    text = _one_line(failed.value)
    assert failed.value.exit_code == 1 and "no space left on the device" in text and "free now" in text
    assert "manifest.json" in text and "resumes" in text and not out.exists()


def test_gdal_errors_without_errno_are_read_from_their_text_and_others_pass_unchanged(tmp_path):
    full = rasterio.errors.RasterioIOError(f"{tmp_path}/x.tif: Write error: {os.strerror(errno.ENOSPC)}")
    assert isinstance(os_error_line(full, tmp_path / "out"), NoSpaceError)
    limit = os_error_line(OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(tmp_path / "x")), None, 2_500_000)
    assert "file size limit" in str(limit) and "about 2.5 MB more were needed" in str(limit)
    other = OSError(errno.ECONNRESET, "reset")
    assert os_error_line(other, tmp_path) is other
    located = OutputLocationError("already one line")
    assert os_error_line(located, tmp_path) is located and isinstance(located, GeosegError)
