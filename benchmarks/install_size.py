"""What `pip install -e .` brings in, without torch and its CUDA libraries: the distributions pip
resolves for a fresh install (``pip install --dry-run --ignore-installed --report``) and their size
on disk as installed in this venv (the files each one's RECORD lists; apparent sizes).

    python benchmarks/install_size.py [--compare OTHER_CHECKOUT] [--out benchmarks/results/install_size.json]

``--compare`` resolves another checkout of tzoo (an older commit, e.g. from `git archive`) the same
way and lists the distributions only one of them needs. Needs the package index pip is set up with
(it resolves, downloads nothing but metadata) and the distributions installed here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "triton")  # and nvidia-*: torch's CUDA libraries


def resolve(checkout: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "-e", str(checkout)], check=True, capture_output=True)  # fmt: skip
        return sorted(item["metadata"]["name"] for item in json.loads(report.read_text())["install"])


def installed_bytes(name: str) -> int | None:
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        return None
    files = {Path(dist.locate_file(f)).resolve() for f in dist.files or []}
    return sum(f.stat().st_size for f in files if f.is_file())


def measure(checkout: Path) -> dict[str, int | None]:
    names = [n for n in resolve(checkout) if n.lower() not in HEAVY and not n.lower().startswith("nvidia") and n != "tzoo"]
    return {n: installed_bytes(n) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="another tzoo checkout to resolve the same way")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "install_size.json")
    args = parser.parse_args()
    runs = {"this checkout": measure(REPO)}
    if args.compare:
        runs[f"{args.compare}"] = measure(args.compare)
    print("| checkout | distributions (without torch, triton, nvidia-*) | MiB on disk |")
    print("| --- | ---: | ---: |")
    for name, sizes in runs.items():
        known = [s for s in sizes.values() if s is not None]
        print(f"| {name} | {len(sizes)} | {sum(known) / 2**20:.0f} |")
        if len(known) < len(sizes):
            print(f"|  (not installed here, not counted: {', '.join(n for n, s in sizes.items() if s is None)}) | | |")
    if args.compare:
        (a, ours), (b, theirs) = runs.items()
        for here, there, label in ((ours, theirs, a), (theirs, ours, b)):
            only = {n: here[n] for n in sorted(set(here) - set(there))}
            if only:
                listed = ", ".join(f"{n} {s / 2**20:.1f} MiB" if s else n for n, s in only.items())
                print(f"\nonly {label} needs: {listed}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
