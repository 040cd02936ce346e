"""Small Minari datasets written once per test session into a temporary folder (never ~/.minari)."""

import pytest

from tzoo.tasks.decision.collect import collect_episodes, write_dataset


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    write_dataset("test/cartpole-v0", collect_episodes("CartPole-v1", 12, seed=0), "CartPole-v1", data_dir=root)
    write_dataset("test/pendulum-v0", collect_episodes("Pendulum-v1", 4, seed=0), "Pendulum-v1", data_dir=root)
    return root
