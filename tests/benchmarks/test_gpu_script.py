"""benchmarks/gpu.py, the one script for a lent GPU, stays runnable: it skips cleanly without CUDA, and
its checks run end to end on the CPU at tiny sizes (so the device's few minutes are not spent on a
broken script)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is the one of a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0_writing_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skipped: no CUDA device here" in done.stdout and "--device cpu --smoke" in done.stdout, done.stdout
    assert not out.exists()  # a CPU machine never overwrites a device's results


def test_too_few_steps_is_refused_naming_the_value(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "2", "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--steps must be >= 4" in done.stderr and "got 2" in done.stderr, done.stderr


@pytest.mark.slow
def test_every_check_runs_on_the_cpu_at_tiny_sizes(tmp_path):
    out = tmp_path / "gpu.json"
    # vision's loss needs ~40 steps to fall clearly (CPU minutes): its training path is the others' code
    tasks = ["--tasks", "lm", "decision", "speech", "bert", "sort"]
    args = [sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--steps", "8", "--new_tokens", "40", *tasks, "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "TZOO_CACHE": str(tmp_path / "cache")})
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    failed = [r for r in rows if r["ok"] is False]
    assert not failed and done.returncode == 0, (failed, done.stderr[-3000:])
    trained = {r["name"].split(":")[0] for r in rows if r["group"] == "train" and r["ok"]}
    assert trained == {"lm", "decision", "speech", "bert", "sort"}, rows
    assert all(len(r["losses"]) == 8 for r in rows if r["group"] == "train")
    groups = {r["group"] for r in rows}
    assert {"decoding", "LM MFU", "ViT vs timm"} <= groups, groups
    assert any(r["group"] == "LM MFU" and r.get("tokens_per_s", 0) > 0 for r in rows), rows
