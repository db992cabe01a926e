"""The command line as a user meets it: help, version, exit statuses, file faults, and the
console of a step run with --log (errors and progress on it, everything else in the log)."""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from thinslice import __version__, io
from thinslice.cli import build_parser, main
from thinslice.errors import FILE_ERROR, INPUT_ERROR, INTERNAL_ERROR, USAGE_ERROR


def _steps() -> dict[str, argparse.ArgumentParser]:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def thinslice(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m thinslice ...` in a fresh process (--log redirects the process's own stderr)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "thinslice", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, anatomical_path):
    """nibabel's real T1 prepared for x2 along its 2 mm axis 2."""
    d = tmp_path_factory.mktemp("prepared")
    assert main(["prepare", "--input", str(anatomical_path), "--slice-axis", "2", "--factor", "2",
                 "--out-image", str(d / "lr.nii.gz"), "--out-geometry", str(d / "lr.json"),
                 "--out-mask", str(d / "mask.nii.gz")]) == 0
    return d


def _upsample(prepared: Path, out: Path) -> list[str]:
    return ["upsample", "--method", "cubic", "--image", str(prepared / "lr.nii.gz"),
            "--geometry", str(prepared / "lr.json"), "--out", str(out)]


# --------------------------------------------------------------------------- help and version

def test_every_step_and_option_has_help():
    for name, parser in _steps().items():
        assert parser.description, f"step {name} has no description"
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"thinslice {name} {'/'.join(action.option_strings) or action.dest}: no help"


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"thinslice {__version__}"


def test_usage_input_and_file_errors_have_their_own_status(tmp_path, prepared, anatomical_path):
    with pytest.raises(SystemExit) as done:
        main(["upsample", "--method", "quintic"])
    assert done.value.code == USAGE_ERROR
    assert main(["prepare", "--input", str(anatomical_path), "--slice-axis", "2", "--target-spacing", "2.5",
                 "--out-image", str(tmp_path / "i.nii.gz"), "--out-geometry", str(tmp_path / "i.json"),
                 "--out-mask", str(tmp_path / "m.nii.gz")]) == INPUT_ERROR
    assert main(["upsample", "--method", "cubic", "--image", str(tmp_path / "absent.nii.gz"),
                 "--geometry", str(prepared / "lr.json"), "--out", str(tmp_path / "o.nii.gz")]) == FILE_ERROR


# --------------------------------------------------------------------------- file faults

def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(tmp_path, capsys, prepared, monkeypatch):
    def fill_the_disk(img, filename):   # nibabel writes part of the file, then the disk is full
        Path(filename).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.nib, "save", fill_the_disk)
    out = tmp_path / "out" / "cubic.nii.gz"
    assert main(_upsample(prepared, out)) == FILE_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(out) in lines[0] and "No space left on device" in lines[0] and "disk is full" in lines[0]
    assert list(out.parent.iterdir()) == []


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs with 8 KiB left (needs mount rights, e.g. root)."""
    disk = tmp_path / "full"
    if not _mount_tmpfs(disk, "size=256k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 8192))
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write: a read-only tmpfs (root), else mode 555."""
    folder = tmp_path / "ro"
    if _mount_tmpfs(folder, "ro,size=64k"):
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("root can write any folder, and no read-only tmpfs can be mounted here")
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_a_real_full_disk(full_disk, capsys, prepared):
    out = full_disk / "cubic.nii.gz"
    assert main(_upsample(prepared, out)) == FILE_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "disk is full" in lines[0], lines
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_a_read_only_folder(read_only_folder, capsys, prepared):
    out = read_only_folder / "sub" / "cubic.nii.gz"
    assert main(_upsample(prepared, out)) == FILE_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(read_only_folder / "sub") in lines[0], lines
    assert "read-only" in lines[0] or "permission denied" in lines[0]


def test_a_file_where_the_output_folder_should_be(tmp_path, capsys, prepared):
    (tmp_path / "results").write_text("not a folder")
    assert main(_upsample(prepared, tmp_path / "results" / "cubic.nii.gz")) == FILE_ERROR
    line = capsys.readouterr().err.strip()
    assert str(tmp_path / "results") in line and "move or rename" in line


def test_bench_table_of_an_unfinished_run_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["bench-table", str(tmp_path / "run")]) == INPUT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "run") in err and "not finished" in err


# --------------------------------------------------------------------------- --log: the console

def test_with_log_the_error_is_on_the_console_and_in_the_log(tmp_path, anatomical_path):
    log = tmp_path / "logs" / "prepare.log"
    done = thinslice("prepare", "--input", str(anatomical_path), "--slice-axis", "2", "--target-spacing", "2.5",
                     "--out-image", str(tmp_path / "i.nii.gz"), "--out-geometry", str(tmp_path / "i.json"),
                     "--out-mask", str(tmp_path / "m.nii.gz"), "--log", str(log))
    assert done.returncode == INPUT_ERROR
    console = done.stderr.strip().splitlines()
    assert len(console) == 1 and console[0].startswith("thinslice prepare: error: ") and "2.5" in console[0]
    assert console[0] in log.read_text()


def test_with_log_an_internal_error_is_one_console_line_and_a_traceback_in_the_log(tmp_path, prepared):
    log = tmp_path / "upsample.log"
    bug = ("import sys, thinslice.cli as cli, thinslice.commands as commands; commands.upsample = lambda a: 1 / 0; "
           "sys.exit(cli.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", bug, *_upsample(prepared, tmp_path / "o.nii.gz"), "--log", str(log)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == INTERNAL_ERROR
    console = done.stderr.strip().splitlines()
    assert len(console) == 1 and "internal error (ZeroDivisionError" in console[0] and str(log) in console[0]
    assert "Traceback" in log.read_text() and "ZeroDivisionError: division by zero" in log.read_text()


def test_with_log_training_shows_progress_on_the_console(tmp_path, prepared):
    log = tmp_path / "train.log"
    settings = tmp_path / "sr_train.json"
    settings.write_text('{"steps": 12, "batch_size": 2, "patch_size": 16, "channels": 8, "depth": 2, "log_every": 4}')
    done = thinslice("train-sr", "--source", "self", "--images", str(prepared / "lr.nii.gz"),
                     "--geometries", str(prepared / "lr.json"), "--settings", str(settings),
                     "--checkpoint", str(tmp_path / "sr.ckpt"), "--loss-csv", str(tmp_path / "loss.csv"),
                     "--out", str(tmp_path / "sr.pt"), "--threads", "1", "--log", str(log),
                     env={"THINSLICE_PROGRESS_S": "0"})
    assert done.returncode == 0, done.stderr + log.read_text()
    console = done.stderr.strip().splitlines()
    steps = [line for line in console if line.startswith("thinslice train-sr: train sr: step ")]
    assert steps and all("ETA" in line for line in steps), console
    assert any("loss" in line for line in steps), console
    assert any("train sr: done, 12/12" in line for line in console), console
    assert "step/s" in log.read_text()   # the tqdm bar went to the log, not to the console
    assert not any("step/s" in line for line in console)
