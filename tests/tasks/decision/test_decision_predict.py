"""`tzoo predict` for the decision task: N episodes at each target return -> returns.csv in the run
folder, the same returns as the module's own rollouts (the reference path); bad settings are one line."""

import csv
import re
import textwrap

import pytest

from tzoo.tasks.cli import main
from tzoo.tasks.loading import load_module


def config_file(tmp_path, minari_root):
    config = tmp_path / "tiny.yaml"
    config.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        trainer:
          max_steps: 2
          limit_val_batches: 0
          default_root_dir: {tmp_path / "runs"}
          enable_progress_bar: false
          enable_model_summary: false
        model:
          class_path: tzoo.tasks.decision.module.DecisionTransformer
          init_args: {{net: {{transformer: {{dim: 16, depth: 1, num_heads: 2}}}}, optim: {{warmup_steps: 1}}, eval_episodes: 0, eval_target_return: 400}}
        data:
          class_path: tzoo.tasks.decision.data.TrajectoryDataModule
          init_args: {{env_id: CartPole-v1, dataset: test/cartpole-v0, data_dir: {minari_root}, context_length: 5, batch_size: 4}}
        """))  # fmt: skip
    return config


def test_predict_plays_episodes_at_each_target_and_writes_their_returns(tmp_path, minari_root, capsys):
    config = config_file(tmp_path, minari_root)
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    capsys.readouterr()
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.init_args.predict_episodes", "2",
          "--data.init_args.predict_target_returns", "[100, 500]", "--data.init_args.predict_seed", "7"])  # fmt: skip
    (written,) = re.findall(r"wrote 4 predictions to (\S+)", capsys.readouterr().out)
    assert written.endswith("returns.csv") and "/runs/decision/version_1/" in written  # the predict run's folder
    with open(written) as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["target_return"]), int(r["episode"]), int(r["seed"])) for r in rows] == [(100, 0, 7), (100, 1, 8), (500, 0, 7), (500, 1, 8)]
    module = load_module(ckpt, task="decision")
    for target in (100, 500):  # the same episodes through the module's own rollouts
        expected = module.rollouts(float(target), episodes=2, seed=7)
        got = [r for r in rows if float(r["target_return"]) == target]
        assert [float(r["return"]) for r in got] == expected.returns.tolist()
        assert [int(r["length"]) for r in got] == expected.lengths.tolist()
    assert all(r["env_id"] == "CartPole-v1" and r["normalized_return"] for r in rows)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("predict_episodes", "0", r"predict_episodes must be >= 1, got 0"),
    ("predict_target_returns", "[.nan]", r"predict_target_returns must be finite numbers .*got nan"),
])  # fmt: skip
def test_bad_predict_settings_are_one_line(tmp_path, minari_root, capsys, flag, value, message):
    config = config_file(tmp_path, minari_root)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(config), f"--data.init_args.{flag}", value])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("tzoo: error: ") and re.search(message, line), line
