"""Fetching the demo data: the download command, and a second call that finds the files."""

from __future__ import annotations

import subprocess

import pytest

from thinslice import fetch
from thinslice.errors import ThinsliceError


def test_demo_download_asks_pip_for_the_sdist_only(tmp_path, monkeypatch):
    """Only mskt itself must come as a source archive: with `--no-binary :all:` pip also
    compiles mskt's build dependencies (numpy) from source to read its metadata, and fails."""
    calls = []

    def offline(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "no network")

    monkeypatch.setattr(fetch.subprocess, "run", offline)
    with pytest.raises(ThinsliceError, match="could not download mskt==0.1.22 .*place mskt-0.1.22.tar.gz in"):
        fetch.fetch_demo(tmp_path / "demo", tmp_path / "cache")
    (cmd,) = calls
    assert cmd[cmd.index("--no-binary") + 1] == "mskt" and ":all:" not in cmd
    assert cmd[-1] == "mskt==0.1.22" and "--no-deps" in cmd
    assert not (tmp_path / "demo").exists() and list((tmp_path / "cache").iterdir()) == []


def test_demo_already_there_is_not_fetched_again(tmp_path, monkeypatch):
    demo = tmp_path / "demo"
    demo.mkdir()
    for i in range(fetch.DEMO_FILES):
        (demo / f"{i:03d}.dcm").write_bytes(b"")
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("downloaded again"))
    assert fetch.fetch_demo(demo, tmp_path / "cache") == demo
