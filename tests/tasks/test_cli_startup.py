"""Instant help: `tzoo --help`, `tzoo tasks` and the --help of the light subcommands import neither
Lightning nor torch, nor any task's code (checked in a fresh interpreter through sys.modules); the
Lightning subcommands still load it."""

import json
import subprocess
import sys

import pytest

HEAVY = ("lightning", "pytorch_lightning", "torch", "torchvision", "torchaudio", "torchmetrics", "jsonargparse")
TASK_CODE = ("tzoo.tasks.lm.module", "tzoo.tasks.lm.data", "tzoo.tasks.vision.module", "tzoo.tasks.speech.module",
             "tzoo.tasks.decision.module", "tzoo.core")  # fmt: skip

PROBE = """
import json, sys
from tzoo.tasks.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    assert exc.code in (None, 0), exc.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, set(json.loads(out.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], [], ["tasks"], ["tasks", "--help"], ["generate", "--help"],
                                  ["compare", "--help"], ["check", "--help"], ["check", "-h"]])  # fmt: skip
def test_light_commands_import_neither_lightning_nor_torch_nor_task_code(argv):
    stdout, modules = modules_after(argv)
    assert stdout.strip()  # it did answer
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in TASK_CODE)
    assert heavy == [], f"`tzoo {' '.join(argv)}` imported {heavy[:8]}"


def test_tasks_lists_every_builtin_with_its_config_without_importing_it():
    stdout, modules = modules_after(["tasks"])
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()[1:]}
    assert {"lm", "vision", "speech", "decision"} <= set(rows)
    assert rows["lm"][1] == "ok" and rows["lm"][2].endswith("configs/lm/shakespeare_char.yaml")
    assert "lightning" not in {m.split(".")[0] for m in modules}


def test_a_lightning_subcommand_still_loads_lightning():
    _, modules = modules_after(["fit", "--help"])
    assert "lightning.pytorch" in modules


def test_compare_reads_run_cards_without_lightning_or_torch(tmp_path):
    run = tmp_path / "toy" / "version_0"
    run.mkdir(parents=True)
    (run / "run_card.json").write_text(json.dumps({"task": "toy", "status": "finished", "params": 1234, "mfu": 0.25}))
    stdout, modules = modules_after(["compare", str(tmp_path)])
    assert "toy/version_0" in stdout and "25.0%" in stdout
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy[:8]


def test_check_steps_are_still_reachable_from_the_check_module():
    from tzoo.tasks import check, check_steps

    assert check.run_checks is check_steps.run_checks and check.Check is check_steps.Check
