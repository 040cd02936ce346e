"""How long the `tzoo` command takes to answer, as a user runs it: the whole process (interpreter
start, imports, output), median of ``--repeats`` runs after one warm-up run (so the file cache and
.pyc files are warm, as for any second use).

The light commands (`tzoo --help`, `tzoo tasks`, the --help of generate, compare and check) import neither Lightning
nor torch; `tzoo tasks --check` and `tzoo fit --help` import Lightning and the tasks and are shown
for comparison, with an empty interpreter and a bare `import lightning.pytorch` as the floor and
the cost the light commands avoid. Targets: `tzoo --help` < 0.5 s, `tzoo tasks` < 1.5 s.

    python benchmarks/cli_startup.py [--repeats 5] [--out benchmarks/results/cli_startup.json]

Prints a Markdown table (with the machine's 1-minute load, since other work on it slows every
row) and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TZOO = str(BIN / "tzoo")

# name -> (command, target seconds or None)
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "python -c pass": ([sys.executable, "-c", "pass"], None),
    "tzoo --help": ([TZOO, "--help"], 0.5),
    "tzoo tasks": ([TZOO, "tasks"], 1.5),
    "tzoo generate --help": ([TZOO, "generate", "--help"], 0.5),
    "tzoo compare --help": ([TZOO, "compare", "--help"], 0.5),
    "tzoo check --help": ([TZOO, "check", "--help"], 0.5),
    "tzoo tasks --check": ([TZOO, "tasks", "--check"], None),
    "python -c 'import lightning.pytorch'": ([sys.executable, "-c", "import lightning.pytorch"], None),
    "tzoo fit --help": ([TZOO, "fit", "--help"], None),
}


def time_command(command: list[str], repeats: int) -> list[float]:
    subprocess.run(command, capture_output=True, check=True, timeout=600)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, timeout=600)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "cli_startup.json")
    parser.add_argument("--only", nargs="*", choices=list(COMMANDS), help="time only these rows")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    for name, (command, target) in COMMANDS.items():
        if args.only and name not in args.only:
            continue
        times = time_command(command, args.repeats)
        median = statistics.median(times)
        ok = None if target is None else median < target
        rows.append({"command": name, "median_s": median, "min_s": min(times), "max_s": max(times), "times_s": times,
                     "target_s": target, "meets_target": ok})  # fmt: skip
    load_after = os.getloadavg()[0]
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "repeats": args.repeats, "load_1min_before": load_before, "load_1min_after": load_after}  # fmt: skip
    print(f"Whole-process time, median of {args.repeats} (after a warm-up run); 1-minute load {load_before:.2f} -> {load_after:.2f}\n")
    print("| command | median s | min s | max s | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row in rows:
        target = "" if row["target_s"] is None else f"< {row['target_s']} s: {'met' if row['meets_target'] else 'MISSED'}"
        print(f"| `{row['command']}` | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['max_s']:.2f} | {target} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
