"""benchmarks/lm.py's time-to-loss mode: the crossing of a loss curve, the recipe list, and a bad
recipe name refused naming it and the valid ones (the timed run itself is the lead's, on a quiet machine)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lm  # noqa: E402


def test_time_to_loss_is_the_first_evaluation_at_or_below_the_target():
    curve = [(50, 1.0, 3.0), (100, 2.0, 2.5), (150, 3.0, 2.4), (200, 4.0, 2.6)]
    assert lm.time_to_loss(curve, 2.5) == (100, 2.0)
    assert lm.time_to_loss(curve, 2.45) == (150, 3.0)
    assert lm.time_to_loss(curve, 2.0) is None


def test_recipes_are_the_best_recipe_plus_one_option_each_and_combined():
    assert lm.RECIPES["rope_lr2e-3"] == {"position": "rope", "optim": {"lr": 2e-3, "min_lr": 2e-4}}
    assert lm.RECIPES["muon"]["optim"] == {"lr": 2e-3, "min_lr": 2e-4, "optimizer": "muon", "muon_lr": 0.02}
    combined = lm.RECIPES["combined"]
    assert combined["transformer"] == {"qk_norm": True, "feed_forward": "squared_relu"}
    assert combined["optim"]["optimizer"] == "muon" and combined["optim"]["schedule"] == "wsd"
    assert combined["net"] == {"logit_softcap": 30.0, "tie_embeddings": False, "zero_init_head": True}
    assert lm.parse_recipes("muon, qk_norm") == ["muon", "qk_norm"]
    assert "optimizer" not in lm.RECIPES["combined_adamw"]["optim"] and lm.RECIPES["combined_adamw"]["transformer"] == combined["transformer"]
    assert lm.RECIPES["muon_ns3"]["optim"]["muon_ns_steps"] == 3 and lm.RECIPES["muon_batch24"]["batch_size"] == 24


def test_an_unknown_recipe_is_refused_naming_it_and_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown recipe 'adam'; valid: rope_lr2e-3, muon,"):
        lm.parse_recipes("muon,adam")
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc\n" * 100)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lm.py"), "--time_to_loss", "--recipes", "lion", "--corpus", str(corpus)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown recipe 'lion'; valid: rope_lr2e-3" in done.stderr, done.stderr
