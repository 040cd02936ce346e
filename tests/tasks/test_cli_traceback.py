"""`--traceback` / `TZOO_TRACEBACK=1`: a bad input the CLI reports as one line `tzoo: error: ...`
shows its traceback first (same line, same exit status 2); an unexpected exception keeps its
traceback whatever the setting."""

import os
import subprocess
import sys

import pytest

from tzoo.tasks import cli
from tzoo.tasks.cli import main

MISSING = ["fit", "--config", "no/such/config.yaml"]  # refused before Lightning is imported


def run_main(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    return exit_info.value.code, err


def test_a_known_error_is_one_line_without_the_flag(capsys, monkeypatch):
    monkeypatch.delenv("TZOO_TRACEBACK", raising=False)
    code, err = run_main(capsys, MISSING)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == ["tzoo: error: config file 'no/such/config.yaml' does not exist (try one under configs/, or `tzoo tasks`)"]


@pytest.mark.parametrize("where", ["flag first", "flag last", "env"])
def test_the_flag_or_the_environment_shows_the_traceback_then_the_line(capsys, monkeypatch, where):
    monkeypatch.delenv("TZOO_TRACEBACK", raising=False)
    argv = {"flag first": ["--traceback", *MISSING], "flag last": [*MISSING, "--traceback"], "env": MISSING}[where]
    if where == "env":
        monkeypatch.setenv("TZOO_TRACEBACK", "1")
    code, err = run_main(capsys, argv)
    lines = err.strip().splitlines()
    assert code == 2 and lines[0] == "Traceback (most recent call last):"
    assert any("UsageError: config file 'no/such/config.yaml' does not exist" in line for line in lines)
    assert lines[-1].startswith("tzoo: error: config file 'no/such/config.yaml' does not exist")


@pytest.mark.parametrize("value", ["0", "", "false", "no"])
def test_tzoo_traceback_off_values(capsys, monkeypatch, value):
    monkeypatch.setenv("TZOO_TRACEBACK", value)
    code, err = run_main(capsys, MISSING)
    assert code == 2 and "Traceback" not in err


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch):
    def broken(argv):
        raise RuntimeError("a bug, not a bad input")

    monkeypatch.setattr(cli, "_print_tasks", broken)
    monkeypatch.delenv("TZOO_TRACEBACK", raising=False)
    with pytest.raises(RuntimeError, match="a bug, not a bad input"):  # propagates: Python prints its traceback
        main(["tasks"])


def test_the_installed_command_with_the_environment_variable():
    env = {**os.environ, "TZOO_TRACEBACK": "1"}
    tzoo = os.path.join(os.path.dirname(sys.executable), "tzoo")
    out = subprocess.run([tzoo, *MISSING], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and out.stderr.startswith("Traceback (most recent call last):")
    assert out.stderr.strip().splitlines()[-1].startswith("tzoo: error: config file")
