"""Quiet by default: our lines on stderr, TensorFlow/absl/Dask chatter in the run's log file (-v: both)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geoseg_batch import cli, logs
from geoseg_batch.errors import RunError

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ("InitializeLog", "oneDNN", "port.cc", "cpu_feature_guard")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script in a fresh process, in the environment a user has (no TF_CPP_MIN_LOG_LEVEL)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "geoseg_batch.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _native_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(word in line for word in NATIVE)]


def test_info_hides_tensorflow_start_up_lines_unless_verbose(tmp_path):
    quiet = _cli("info", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert _native_lines(quiet.stderr) == [], quiet.stderr
    assert quiet.stderr == "", "info has nothing of ours to say on stderr"
    loud = _cli("-v", "info", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    if not _native_lines(loud.stderr):
        pytest.skip("this TensorFlow build prints nothing at start-up")
    assert not list(tmp_path.iterdir()), "info has no output directory, hence no log file"


@pytest.mark.cluster
def test_predict_keeps_library_lines_in_the_log_file_beside_out(tmp_path):
    from tests.helpers import make_bundle, write_scene

    scene, bundle = write_scene(tmp_path / "s.tif", (64, 64)), make_bundle(tmp_path / "m.keras")
    out = tmp_path / "pred"
    done = _cli("predict", str(scene), "--model", str(bundle), "--out", str(out), "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "manifest:" in done.stdout
    assert "dask dashboard:" in done.stderr and "run summary" in done.stderr, "our lines stay on the terminal"
    assert _native_lines(done.stderr) == [], done.stderr
    assert "distributed." not in done.stderr, done.stderr
    log_file = logs.log_path_for(out)
    assert log_file == tmp_path / ".geoseg-batch-logs" / "pred.log"
    text = log_file.read_text()
    assert "distributed.scheduler" in text and "distributed.worker" in text, "client and worker lines"
    assert "geoseg_batch.runs.predict" in text, "ours are kept in the file too"
    assert not _native_lines(text) or "InitializeLog" in text
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".pred")], "nothing named after OUT"


def test_early_error_is_one_line_and_leaves_no_log(tmp_path):
    done = _cli("predict", str(tmp_path / "missing.tif"), "--model", str(tmp_path / "m.keras"),
                "--out", str(tmp_path / "new" / "p"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("geoseg-batch: error:")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(tmp_path.iterdir()), "an empty log file is removed, with the directories made for it"


def test_error_line_points_at_the_log_when_something_was_logged(tmp_path, capsys, monkeypatch):
    def failing(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        logging.getLogger("distributed.nanny").warning("Worker process died unexpectedly")
        raise RunError("the run stopped")

    monkeypatch.setattr(cli, "dispatch", failing)
    out = tmp_path / "o"
    assert cli.main(["synth", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    log_file = logs.log_path_for(out)
    assert err.strip().splitlines() == [f"geoseg-batch: error: the run stopped (log: {log_file})"]
    assert "Worker process died unexpectedly" in log_file.read_text()


def test_library_records_go_to_the_file_ours_to_both(tmp_path, capsys):
    out = tmp_path / "o"
    bokeh_like = logging.getLogger("tornado.application")
    with logs.run_logging(out) as path:
        assert logs.cluster_log_level() == logging.INFO
        logging.getLogger("geoseg_batch.test").info("ours")
        try:
            raise ConnectionResetError("websocket closed")
        except ConnectionResetError:
            bokeh_like.error("Uncaught exception GET /status/ws", exc_info=True)
        logging.getLogger("tensorflow").warning("retracing")
    err = capsys.readouterr().err
    assert err == "ours\n"
    text = path.read_text()
    assert "ours" in text and "Uncaught exception GET /status/ws" in text and "ConnectionResetError" in text
    assert "tensorflow: retracing" in text
    assert logs.cluster_log_level() == logging.ERROR, "back to the default outside a run"


def test_verbose_shows_library_records_quiet_hides_our_info(tmp_path, capsys):
    with logs.run_logging(tmp_path / "o", verbose=True):
        logging.getLogger("distributed.scheduler").info("State start")
        logging.getLogger("geoseg_batch.test").info("ours")
    assert capsys.readouterr().err.splitlines() == ["distributed.scheduler INFO: State start", "ours"], "each once"
    with logs.run_logging(tmp_path / "o", quiet=True):
        logging.getLogger("geoseg_batch.test").info("progress")
        logging.getLogger("geoseg_batch.test").warning("warning: careful")
    assert capsys.readouterr().err == "warning: careful\n"


def test_loggers_printing_to_stderr_themselves_are_routed_and_restored(tmp_path, capsys):
    own = logging.getLogger("fake_library")  # what distributed does when imported before any setup
    handler = logging.StreamHandler(sys.stderr)
    own.addHandler(handler)
    own.propagate = False
    try:
        with logs.run_logging(tmp_path / "o") as path:
            own.warning("library chatter")
        assert capsys.readouterr().err == ""
        assert "library chatter" in path.read_text()
        assert own.handlers == [handler] and own.propagate is False
    finally:
        own.removeHandler(handler)


def test_without_an_output_directory_library_warnings_stay_on_stderr(capsys):
    root_handlers = list(logging.getLogger().handlers)
    with logs.run_logging(None) as path:
        logging.getLogger("distributed.client").info("detail")
        logging.getLogger("distributed.client").warning("scheduler is slow")
    assert path is None
    assert capsys.readouterr().err == "distributed.client WARNING: scheduler is slow\n"
    assert logging.getLogger().handlers == root_handlers


def test_tf_log_level_defaults_to_2_and_onednn_is_never_set(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    logs.quiet_tensorflow_env()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2" and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    logs.quiet_tensorflow_env()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0", "the user's choice wins"


def test_run_out_from_arguments_and_job_files(tmp_path):
    parser = cli.build_parser()
    assert logs.run_out(parser.parse_args(["synth", "--out", "x"])) == Path("x")
    assert logs.run_out(parser.parse_args(["demo"])) == Path("demo_out")
    assert logs.run_out(parser.parse_args(["info"])) is None
    assert logs.run_out(parser.parse_args(["validate", "j.yaml"])) is None
    assert logs.run_out(parser.parse_args(["submit", str(tmp_path / "missing.yaml")])) is None
    job = tmp_path / "j.yaml"
    job.write_text(f"kind: train\ndata: {{path: {tmp_path}}}\nout: {tmp_path / 'run'}\n")
    assert logs.run_out(parser.parse_args(["submit", str(job)])) == tmp_path / "run"
    assert logs.run_out(parser.parse_args(["train", str(job), "--out", "other"])) == Path("other")


def test_native_errors_are_replayed_without_an_output_directory(capfd):
    with logs.run_logging(None):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n"
                    b"E0000 00:00:1.0 1 cuda.cc:1] no driver\n  detail\n")
    assert capfd.readouterr().err == "E0000 00:00:1.0 1 cuda.cc:1] no driver\n  detail\n"


def test_a_second_run_leaves_the_log_of_the_run_writing_there_alone(tmp_path):
    out = tmp_path / "pred"
    log_file = logs.log_path_for(out)
    log_file.parent.mkdir()
    log_file.write_text("the first run's lines\n")
    with logs.run_logging(out) as path:  # e.g. refused by the first run's lock, having written nothing
        assert path == log_file
    assert log_file.read_text() == "the first run's lines\n", "not emptied, not removed"


def test_a_plain_ctrl_c_says_interrupted(monkeypatch, capsys):
    from geoseg_batch import cli

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "dispatch", interrupted)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "geoseg-batch: interrupted"
