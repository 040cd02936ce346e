"""benchmarks/speech_step.py: its --smoke run times the config's training step in fp32 and under
bf16 autocast on real batches, and a --variant's model (a Conformer encoder) beside them, and writes
the table and the JSON (the measured run is the lead's); a variant that would change the batches is refused."""

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


CONFORMER = "conformer=--model.init_args.net.encoder.block=conformer --model.init_args.net.encoder.conv_kernel=3"


def test_smoke_times_fp32_bf16_and_a_variant_and_profiles_the_fp32_step(tmp_path):
    out = tmp_path / "step.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speech_step.py"), "--smoke", "--profile", "--out", str(out),
                           "--variant", CONFORMER], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    rows = {r["precision"]: r for r in result["rows"]}
    assert set(rows) == {"fp32", "bf16", "conformer"} and result["batches"] == 2
    assert rows["conformer"]["options"] == CONFORMER.partition("=")[2].split() and rows["fp32"]["options"] == []
    assert rows["conformer"]["parameters"] > rows["fp32"]["parameters"] == rows["bf16"]["parameters"]  # its model, not a copy
    assert rows["fp32"]["vs_fp32"] == 1.0 and len(rows["fp32"]["rounds"]) == 2  # fp32 opens and closes the rounds
    for r in rows.values():
        assert all(math.isfinite(t) and t > 0 for t in r["rounds"]) and r["s_per_step"] == statistics.median(r["rounds"])
    assert math.isclose(rows["bf16"]["vs_fp32"], rows["bf16"]["s_per_step"] / rows["fp32"]["s_per_step"])
    shares = [o["share"] for o in result["operators"]]
    assert result["operators"] and shares == sorted(shares, reverse=True) and sum(shares) <= 1.0 + 1e-9
    assert "| precision (or variant, fp32) | parameters | s per step (median) | vs fp32 | first pass (s) |" in done.stdout
    assert "| bf16 |" in done.stdout and "| conformer |" in done.stdout


def test_a_variant_that_changes_the_data_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speech_step.py"), "--smoke", "--out", str(tmp_path / "x.json"),
                           "--variant", "big=--data.init_args.batch_size=4"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "--variant big: only --model.* options (every row trains on the config's batches), got ['--data.init_args.batch_size=4']" in done.stderr
