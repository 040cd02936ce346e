"""Files written whole or not at all (``tzoo.tasks.files``), and the temporary files of writers
that were killed mid-write, removed by the next write into the same folder."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import torch

from tzoo.tasks.files import _WHERE, atomic_write, remove_stale_temps, temp_path
from tzoo.tasks.reliability import atomic_torch_save, read_checkpoint

KILLED_MID_WRITE = """
import os, signal, sys
from tzoo.tasks.files import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_renames_into_place_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path, "w", encoding="utf-8") as f:
        f.write("second, half")
        raise RuntimeError("boom")
    assert path.read_text() == "first"  # the old file, untouched
    assert _temps(path.parent) == []  # and nothing left beside it


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match=r"mode='a' is not one of \('w', 'wb'\)"), atomic_write(tmp_path / "x", "a"):
        pass


def test_only_temps_of_dead_writers_here_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".last.ckpt.{_WHERE}.{dead}.{uuid.uuid4().hex[:8]}.tmp"
    stale_other_name = tmp_path / f".epoch=1-step=10.ckpt.{_WHERE}.{dead}.0123abcd.tmp"  # a save under another name
    live = tmp_path / f".last.ckpt.{_WHERE}.{alive}.0123abcd.tmp"
    own = temp_path(tmp_path / "last.ckpt")  # this process: maybe another thread's write
    elsewhere = tmp_path / f".last.ckpt.0123456789.{dead}.0123abcd.tmp"  # another host or pid namespace
    unrelated = [tmp_path / "notes.tmp", tmp_path / f".last.ckpt.{dead}.0123abcd.tmp", tmp_path / "last.ckpt"]
    for p in [stale, stale_other_name, live, own, elsewhere, *unrelated]:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stale, stale_other_name])
    assert all(p.exists() for p in [live, own, elsewhere, *unrelated])
    assert remove_stale_temps(tmp_path / "missing") == []


def test_what_cleanup_cannot_check_or_delete_never_fails_the_write(tmp_path):
    odd = [
        tmp_path / f".a.{_WHERE}.99999999999999999999.0123abcd.tmp",  # not a pid: not matched
        tmp_path / f".b.{_WHERE}.{_dead_pid()}.0123abcd.tmp",  # a folder under a temp name
    ]
    odd[0].write_bytes(b"x")
    odd[1].mkdir()
    with atomic_write(tmp_path / "out.bin") as f:
        f.write(b"whole")
    assert (tmp_path / "out.bin").read_bytes() == b"whole"
    assert all(p.exists() for p in odd)


def test_temp_names_stay_short_for_long_file_names(tmp_path):
    name = "epoch=1234-step=567890-" + "x" * 220 + ".ckpt"  # 250 characters: legal
    assert len(temp_path(tmp_path / name).name) < 160
    with atomic_write(tmp_path / name) as f:
        f.write(b"whole")
    assert (tmp_path / name).read_bytes() == b"whole"


def test_a_save_killed_mid_write_leaves_the_old_checkpoint_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, str(path)], env=env, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err  # really killed, inside the write
    (left,) = _temps(tmp_path)  # the killed writer's half file, under its temporary name
    assert f".{proc.pid}." in left
    assert read_checkpoint(path) == {"step": 1}  # the checkpoint itself is the old, whole one
    atomic_torch_save({"step": 2}, path)
    assert _temps(tmp_path) == []
    assert read_checkpoint(path) == {"step": 2}
    assert torch.load(path, weights_only=True) == {"step": 2}
