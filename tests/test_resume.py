"""Resume exactly: a `tzoo fit` killed with SIGKILL mid-run and restarted with `--ckpt_path last`
ends with the same weights and the same `metrics.csv` history as an uninterrupted run (LM
mid-epoch, on one process and on two DDP ranks; decision mid-epoch; vision from an epoch-end checkpoint); a kill during
a checkpoint save never leaves a broken `last.ckpt`; a kill between a checkpoint save and that step's rows
loses no rows; `last` never resumes a finished run, a run of
another configuration or a run interrupted before its first checkpoint."""

import csv
import json

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tzoo.tasks.reliability import atomic_torch_save, read_checkpoint
from tzoo.tasks.runs import PENDING_ROWS

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40

# A callback that slows each step down, so that the test's SIGKILL lands mid-run (the kill
# itself comes from the test, at whatever point the child has reached).
THROTTLE = textwrap.dedent(
    """\
    import time
    from lightning.pytorch.callbacks import Callback

    class Throttle(Callback):
        def __init__(self, seconds: float = 0.05) -> None:
            self.seconds = seconds

        def on_train_batch_end(self, *args, **kwargs) -> None:
            time.sleep(self.seconds)
    """
)


def _lm_args(tmp_path: Path) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    config = tmp_path / "lm.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 7
            trainer:
              max_steps: 20
              limit_val_batches: 2
              log_every_n_steps: 1
              enable_progress_bar: false
              deterministic: true
              callbacks:
                - class_path: lightning.pytorch.callbacks.ModelCheckpoint
                  init_args: {{every_n_train_steps: 3, save_last: true, save_top_k: 0}}
                - class_path: throttle.Throttle
            model:
              class_path: tzoo.tasks.lm.module.LanguageModel
              init_args: {{sample_tokens: 4, net: {{block_size: 16, transformer: {{dim: 16, depth: 1, num_heads: 2, dropout: 0.1}}}}, optim: {{warmup_steps: 5}}}}
            data:
              class_path: tzoo.tasks.lm.data.TextDataModule
              init_args:
                corpus: {corpus}
                block_size: 16
                batch_size: 4
                train_batches: 7
                cache_dir: {tmp_path / "cache"}
            """
        )
    )
    return ["--config", str(config)]


def _lm_ddp_args(tmp_path: Path) -> list[str]:
    return [*_lm_args(tmp_path), "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def _decision_args(tmp_path: Path) -> list[str]:
    from tzoo.tasks.decision.collect import collect_episodes, write_dataset

    # 12 CartPole episodes (~2,000 steps, well under a second), collected once for the three runs
    write_dataset("test/cartpole-v0", collect_episodes("CartPole-v1", 12, seed=0), "CartPole-v1", data_dir=tmp_path / "minari")
    config = tmp_path / "decision.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 7
            trainer:
              max_steps: 20
              limit_val_batches: 2
              log_every_n_steps: 1
              enable_progress_bar: false
              deterministic: true
              callbacks:
                - class_path: lightning.pytorch.callbacks.ModelCheckpoint
                  init_args: {{every_n_train_steps: 3, save_last: true, save_top_k: 0}}
                - class_path: throttle.Throttle
            model:
              class_path: tzoo.tasks.decision.module.DecisionTransformer
              init_args: {{eval_episodes: 1, net: {{transformer: {{dim: 16, depth: 1, num_heads: 2, dropout: 0.1}}}}, optim: {{warmup_steps: 5}}}}
            data:
              class_path: tzoo.tasks.decision.data.TrajectoryDataModule
              init_args:
                dataset: test/cartpole-v0
                data_dir: {tmp_path / "minari"}
                context_length: 5
                batch_size: 4
                train_batches: 7
            """
        )
    )
    return ["--config", str(config)]


def _vision_args(tmp_path: Path) -> list[str]:
    return [
        "--config", str(ROOT / "configs/vision/digits.yaml"),
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1", "--model.init_args.net.transformer.num_heads=2",
        "--model.init_args.attention_images=0", "--model.init_args.optim.warmup_steps=5",
        "--data.init_args.batch_size=128", f"--data.init_args.data_dir={tmp_path}",
        "--trainer.max_epochs=5", "--trainer.check_val_every_n_epoch=2", "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.deterministic=true",
        "--trainer.callbacks+=throttle.Throttle",
    ]  # fmt: skip


def _start(args: list[str], root: Path, helpers: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(helpers), "OMP_NUM_THREADS": "1", "TZOO_CACHE": str(root / "cache")}
    cmd = [sys.executable, "-m", "tzoo.tasks.cli", "fit", *args, f"--trainer.default_root_dir={root}", *extra]
    # its own process group: the kill takes every process of the run (DDP's second rank too), as a
    # scheduler or the OOM killer would
    # SIGINT back to its default: an ignored signal is inherited, and Lightning leaves SIGINT ignored in
    # this process after any in-process KeyboardInterrupt (then the run would never see the test's Ctrl-C)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    return out


def _history(run: Path) -> list[tuple[str, str, str]]:
    """Every logged value of a run's metrics.csv as (step, column, value), in file order, except
    the timings (they differ between any two runs)."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    timed = ("_per_s", "time", "/ms", "mfu")
    return [(row["step"], k, v) for row in rows for k, v in row.items() if v and k != "step" and not any(t in k for t in timed)]


def _progress(last: Path, *keys: str) -> tuple[int, ...]:
    """The step, epoch, ... (``keys``) of a last.ckpt that the child may be replacing right now (it writes
    atomically, so any file under the name is whole), all read from the same file; -1 before the first."""
    if not last.is_file():
        return (-1,) * len(keys)
    checkpoint = read_checkpoint(last)
    return tuple(int(checkpoint[k]) for k in keys)


def _ready_to_kill(last: Path, key: str, kill_at: int) -> bool:
    """The checkpoint is past ``kill_at`` and the rows of the step it holds are on disk: Lightning logs
    a step's rows just after that step's checkpoint is saved, and a kill in that moment is its own
    test (``test_a_kill_between_a_checkpoint_and_its_steps_rows_loses_no_rows``); this one kills
    anywhere after them."""
    progress, step = _progress(last, key, "global_step")
    return progress >= kill_at and _logged_through(last.parents[1]) >= step - 1


def _logged_through(run: Path) -> int:
    """The last step with a row in a run's metrics.csv (-1: none yet)."""
    try:
        with open(run / "metrics.csv", newline="") as f:
            return max((int(row["step"]) for row in csv.DictReader(f) if (row.get("step") or "").isdigit()), default=-1)
    except FileNotFoundError:
        return -1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "make_args", "key", "kill_at"),
    [
        ("lm", _lm_args, "global_step", 7),
        ("lm", _lm_ddp_args, "global_step", 7),
        ("decision", _decision_args, "global_step", 7),
        ("vision", _vision_args, "epoch", 1),
    ],
    ids=["lm-mid-epoch", "lm-ddp-mid-epoch", "decision-mid-epoch", "vision-epoch-end"],
)
def test_killed_run_resumes_to_the_same_weights(tmp_path, task, make_args, key, kill_at):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "throttle.py").write_text(THROTTLE)
    args = make_args(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start(args, straight, helpers)  # runs alongside the interrupted one
    victim = _start(args, killed, helpers)
    started = [reference, victim]
    try:
        last = killed / task / "version_0" / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 180
        while not _ready_to_kill(last, key, kill_at):
            assert victim.poll() is None, f"the run ended before it could be killed:\n{victim.communicate()[0][-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        assert victim.returncode == -signal.SIGKILL
        (interrupted_at,) = _progress(last, key)
        started.append(resumed := _start(args, killed, helpers, "--ckpt_path", "last"))
        out = _finish(resumed)
        assert "Restoring states from the checkpoint path" in out and "version_0" in out
        assert "not resumable" not in out  # Lightning sees the LM's and decision's keyed loaders as resumable
        assert not (killed / task / "version_1").exists()  # the resumed run continues version_0's logs
        _finish(reference)
    finally:  # a failed assertion must not leave runs (DDP ranks included) behind
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    a = read_checkpoint(straight / task / "version_0" / "checkpoints" / "last.ckpt")
    b = read_checkpoint(last)
    assert b[key] > interrupted_at and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=0, msg=f"{name} differs after resume")
    # the resumed run's CSV log holds the whole history, each step once, as the uninterrupted run's
    assert _history(killed / task / "version_0") == _history(straight / task / "version_0")


# A logger that kills its own run (SIGKILL, the whole process group) in after_save_checkpoint: after a
# checkpoint is on disk and before Lightning logs that step's rows, the moment a test that kills from
# outside can only hit by chance.
KILLER = textwrap.dedent(
    """\
    import os, signal
    from lightning.pytorch.loggers.logger import Logger

    class KillAfterCheckpoint(Logger):
        def __init__(self, at_step: int) -> None:
            super().__init__()
            self.at_step = at_step

        name = property(lambda self: "killer")
        version = property(lambda self: 0)

        def log_metrics(self, metrics, step=None) -> None:
            pass

        def log_hyperparams(self, params, *args, **kwargs) -> None:
            pass

        def after_save_checkpoint(self, checkpoint_callback) -> None:
            if checkpoint_callback._last_global_step_saved >= self.at_step:
                os.killpg(os.getpgrp(), signal.SIGKILL)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("make_args", [_lm_args, _lm_ddp_args], ids=["lm", "lm-ddp"])
def test_a_kill_between_a_checkpoint_and_its_steps_rows_loses_no_rows(tmp_path, make_args):
    """Lightning saves step 8's checkpoint (global_step 9) just before it logs step 8's rows; a run
    killed in between (on one process, or rank 0 killing both DDP ranks) resumes with those rows
    (carried in the checkpoint), and its metrics.csv equals the uninterrupted run's."""
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "throttle.py").write_text(THROTTLE.replace("0.05", "0.0"))
    (helpers / "killer.py").write_text(KILLER)
    args = make_args(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    victim = _start(args, killed, helpers, "--trainer.logger+=killer.KillAfterCheckpoint", "--trainer.logger.init_args.at_step=9")
    out, _ = victim.communicate(timeout=240)
    assert victim.returncode == -signal.SIGKILL, out[-3000:]
    run = killed / "lm" / "version_0"
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 9
    with open(run / "metrics.csv", newline="") as f:  # the window: step 8's learning rate is there, its loss is not
        assert [row["step"] for row in csv.DictReader(f) if row.get("train/loss")][-1] == "7"
    assert [row["step"] for row in last[PENDING_ROWS]] == [8]
    assert {"train/loss", "train/tokens_per_s"} <= last[PENDING_ROWS][0].keys()  # the step timer's too (a callback)
    with open(run / "metrics.csv", newline="") as f:  # step 8's own timing, not step 7's left over
        step7 = [row["train/tokens_per_s"] for row in csv.DictReader(f) if row["step"] == "7" and row.get("train/tokens_per_s")]
    assert step7 and float(step7[0]) != last[PENDING_ROWS][0]["train/tokens_per_s"]
    _finish(_start(args, killed, helpers, "--ckpt_path", "last"))
    _finish(_start(args, straight, helpers))
    assert _history(run) == _history(straight / "lm" / "version_0")


_SAVER = textwrap.dedent(
    """\
    import sys, torch
    from tzoo.tasks.reliability import atomic_torch_save
    path = sys.argv[1]
    big = {"state_dict": {"w": torch.zeros(4_000_000)}}
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        big["step"] = i
        atomic_torch_save(big, path)
    """
)


def test_a_kill_during_checkpoint_saves_never_leaves_a_broken_file(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 0, "state_dict": {"w": torch.zeros(4_000_000)}}, path)
    steps = []
    for delay in (0.07, 0.23):  # land at different points of the ~16 MB writes
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        steps.append(read_checkpoint(path)["step"])  # whole: the old file or a new one
    assert max(steps) > 0  # the saves did replace the file


def test_keyed_windows_resume_mid_epoch_and_split_across_ranks():
    import numpy as np

    from tzoo.tasks.lm.data import KeyedStarts
    from tzoo.tasks.sampling import Position

    def starts(position: Position, batch_size: int) -> list:
        sampler = KeyedStarts(0, 1000, block_size=8, batch_size=batch_size, num_batches=5, seed=(1, 2), position=lambda: position)
        return list(sampler)

    full = starts(Position(epoch=3, done=0), 8)
    assert len(full) == 5 and all(len(s) == 8 for s in full)
    resumed = starts(Position(epoch=3, done=2), 8)  # after 2 batches: the same last 3
    assert len(resumed) == 3 and all(np.array_equal(a, b) for a, b in zip(full[2:], resumed))
    rank0, rank1 = starts(Position(3, 0, rank=0, world=2), 4), starts(Position(3, 0, rank=1, world=2), 4)
    assert all(np.array_equal(np.concatenate([a, b]), f) for a, b, f in zip(rank0, rank1, full))  # one global batch
    assert not np.array_equal(starts(Position(4, 0), 8)[0], full[0])  # another epoch, other windows


SLOW_THROTTLE = THROTTLE.replace("seconds: float = 0.05", "seconds: float = 1.0")


def test_last_never_resumes_a_finished_run_and_a_run_stopped_before_its_first_checkpoint_is_not_resumable(tmp_path):
    """A finished run exists; a second fit of the same config is interrupted (SIGINT) before its
    first checkpoint; `--ckpt_path last` must refuse, naming both runs, and leave the finished
    run's files byte for byte as they were."""
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "throttle.py").write_text(THROTTLE)
    root = tmp_path / "runs"
    args = [*_lm_args(tmp_path), "--trainer.max_steps=4"]
    _finish(_start(args, root, helpers))
    finished = root / "lm" / "version_0"
    assert json.loads((finished / "run_state.json").read_text())["status"] == "finished"
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}

    (helpers / "throttle.py").write_text(SLOW_THROTTLE)  # the first checkpoint comes after ~3 s
    second = _start(args, root, helpers)
    state = root / "lm" / "version_1" / "run_state.json"
    try:
        deadline = time.monotonic() + 120
        while not state.is_file():
            assert second.poll() is None, second.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the second run never started"
            time.sleep(0.05)
        os.killpg(second.pid, signal.SIGINT)
        second.wait(timeout=60)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    said = second.communicate()[0][-3000:]
    assert not (root / "lm" / "version_1" / "checkpoints" / "last.ckpt").exists(), said
    assert json.loads(state.read_text())["status"] == "stopped: KeyboardInterrupt", said

    third = _start(args, root, helpers, "--ckpt_path", "last")
    out, _ = third.communicate(timeout=240)
    assert third.returncode == 2, out[-3000:]
    assert "tzoo: error: --ckpt_path last found no run to resume" in out
    assert "version_0: finished" in out and "version_1: stopped: KeyboardInterrupt before its first checkpoint" in out
    after = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    assert after == before  # not one byte of the finished run changed
    assert not (root / "lm" / "version_2").exists()  # and the refusal made no run folder


def test_last_picks_the_one_unfinished_run_of_this_configuration(tmp_path):
    """resolve_last over planted run folders: another configuration's run, a finished run, a run
    still running (this process) and an old run without a state file are never candidates; two
    candidates are ambiguous and both are named."""
    from tzoo.tasks.runs import ResumeError, resolve_last

    def plant(version: int, status: str, fingerprint: str = "same", *, ckpt: bool = True, pid: int = 999_999_999) -> None:
        run = tmp_path / "lm" / f"version_{version}"
        (run / "checkpoints").mkdir(parents=True)
        if ckpt:
            (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        if status:
            state = {"status": status, "fingerprint": fingerprint, "pid": pid, "host": __import__("socket").gethostname()}
            (run / "run_state.json").write_text(json.dumps(state))

    plant(0, "stopped: KeyboardInterrupt")
    plant(1, "stopped: KeyboardInterrupt", "other")
    plant(2, "finished")
    plant(3, "running", pid=os.getpid())  # alive: someone is training it
    plant(4, "")  # no run_state.json
    plant(5, "stopped: KeyboardInterrupt", ckpt=False)
    assert resolve_last(tmp_path, "lm", "same").version == 0
    assert resolve_last(tmp_path, "lm", "same", training=False).version == 2  # test/validate: the newest, finished too

    plant(6, "running")  # its process is gone: killed, resumable
    with pytest.raises(ResumeError, match=r"ambiguous: 2 unfinished runs .*version_0, version_6") as err:
        resolve_last(tmp_path, "lm", "same")
    message = str(err.value)
    assert "version_1: stopped: KeyboardInterrupt, another model/data configuration" in message
    assert "version_3: still running" in message and "version_4: no run_state.json" in message
    assert "--ckpt_path " + str(tmp_path / "lm" / "version_6" / "checkpoints" / "last.ckpt") in message
