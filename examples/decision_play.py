"""Play a trained decision transformer and plot one episode: state, action and return-to-go over time.

    tzoo fit --config configs/decision/cartpole.yaml
    python examples/decision_play.py runs/decision/version_0/checkpoints/last.ckpt --target 500 --plot episode.png

The checkpoint carries the normalisation statistics, so no dataset is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tzoo.tasks.loading import load_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--target", type=float, default=None, help="target return (default: the checkpoint's eval_target_return)")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1_000_000)
    parser.add_argument("--plot", type=Path, default=None, help="save the first episode as a PNG here")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU, else MPS, else the CPU), cpu, cuda or mps")
    args = parser.parse_args()
    module = load_module(args.ckpt, task="decision", device=args.device)  # the rollouts run there
    rollouts = module.rollouts(args.target, episodes=args.episodes, seed=args.seed, record=args.plot is not None)
    print(f"{module.env_id}: returns {rollouts.returns.round(1).tolist()} (mean {rollouts.returns.mean():.1f})")
    if args.plot is not None:
        plot_episode(rollouts.trajectory, module.env_id, args.plot)
        print(f"wrote {args.plot}")


def plot_episode(trajectory: dict, env_id: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    axes[0].plot(trajectory["states"])
    axes[0].set_ylabel("state")
    axes[1].step(range(len(trajectory["actions"])), trajectory["actions"], where="post")
    axes[1].set_ylabel("action")
    axes[2].plot(trajectory["returns_to_go"])
    axes[2].set(ylabel="return-to-go", xlabel="step")
    axes[0].set_title(f"{env_id}: one episode, return {trajectory['rewards'].sum():.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
