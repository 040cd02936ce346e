"""benchmarks/speech_augment.py: the recipes (each augmentation alone, all of them), a bad recipe
name refused naming the valid ones, and its --smoke run end to end (the measured runs are the lead's)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import speech_augment  # noqa: E402

from tzoo.tasks.speech.augment import WaveAugment  # noqa: E402
from tzoo.tasks.config import from_dict  # noqa: E402


def test_each_recipe_switches_on_one_augmentation_and_all_switches_on_every_one():
    assert speech_augment.RECIPES["none"] == {}
    for name, recipe in speech_augment.RECIPES.items():
        config = from_dict(WaveAugment, recipe, where="augment")  # every recipe is a valid configuration
        on = {f for f in ("speed", "reverb", "noise", "babble", "telephone", "gain") if getattr(config, f).p > 0}
        assert on == ({"speed", "reverb", "noise", "babble", "telephone", "gain"} if name == "all" else set(recipe)), name
        assert len(on) == 1 or name in ("none", "all")


def test_an_unknown_recipe_is_refused_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown recipe 'echo'; valid: none, speed, reverb, noise, babble, telephone, gain, all"):
        speech_augment.parse_recipes("reverb,echo")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speech_augment.py"), "--recipes", "echo"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "unknown recipe 'echo'" in done.stderr, done.stderr


def test_smoke_trains_validates_and_tests_every_augmentation_and_real_sentences_and_writes_the_table_and_json(tmp_path):
    out = tmp_path / "augment.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speech_augment.py"), "--smoke", "--recipes", "all,sentences",
         "--test", "--results", str(out), "--", "--trainer.log_every_n_steps=1"],
        capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert results["overrides"] == ["--trainer.log_every_n_steps=1"]
    for row in rows:  # options after -- go to every run
        assert yaml.safe_load((Path(row["run"]) / "config.yaml").read_text())["trainer"]["log_every_n_steps"] == 1
    assert [r["recipe"] for r in rows] == ["all", "sentences"] and all(r["steps"] == 2 for r in rows)
    assert rows[1]["args"] == ["--data.init_args.sentence_fraction=0.25"] and rows[1]["augment"] == {}
    assert all(math.isfinite(r["val"]["val/cer"]) for r in rows)
    assert all(math.isfinite(r["test"]["test/cer"]) and math.isfinite(r["test"]["test_sentences/cer"]) for r in rows)
    assert "| augmentation | steps | val CER (attention greedy) |" in done.stdout and "| all | 2 |" in done.stdout
    assert "| augmentation | test/cer | test/cer/espeak |" in done.stdout
