"""Node-level DP at the node: the update is clipped, the noise share is the right size and
unpredictable, and the sent vector carries weight 1 (one dealership, one vote)."""

import numpy as np
import pytest

from common.wire import NodeDPSettings
from node_agent.agent import node_level_update


def test_the_update_is_clipped_to_the_bound():
    start = np.zeros(2000)
    sent = node_level_update(start, start + 100.0, NodeDPSettings(enabled=True, clip=0.5, noise_multiplier=1e-9, nodes=1))
    assert np.linalg.norm(sent - start) == pytest.approx(0.5, rel=1e-6)
    small = start + 0.001  # an update inside the bound passes unchanged (up to the noise)
    assert np.allclose(node_level_update(start, small, NodeDPSettings(clip=0.5, noise_multiplier=1e-9, nodes=1)), small)


def test_each_node_adds_its_share_of_the_noise_and_it_is_never_the_same():
    start = np.full(40_000, 3.0)
    settings = NodeDPSettings(enabled=True, clip=1.0, noise_multiplier=2.0, nodes=4)
    first, second = node_level_update(start, start, settings), node_level_update(start, start, settings)
    assert np.std(first - start) == pytest.approx(2.0 * 1.0 / 2, rel=0.03)  # sigma * clip / sqrt(nodes)
    assert not np.allclose(first, second)  # CSPRNG noise: no seed reproduces it
    summed = sum(node_level_update(start, start, settings) - start for _ in range(4))
    assert np.std(summed) == pytest.approx(2.0, rel=0.03)  # four shares add up to sigma * clip


def test_a_node_level_dp_update_weighs_one_and_moves_the_model_at_most_the_clip(tmp_path, small_alliance):
    """Through the node agent: the encrypted update decrypts to `[w', 1, 1]` (weight 1 whatever
    the branch's size), with w' within clip plus noise of the seeded initial model."""
    import shutil

    from common.he import EncryptedVector, create_secret_context, decrypt_vector, secret_context_bytes
    from common.model import build_model, get_flat_weights
    from common.wire import DPSettings, JobSpec, TrainInstruction
    from lineage import EventKind
    from node_agent.agent import NodeAgent
    from node_agent.config import NodeConfig, write_node_config
    from tests.conftest import EXAMPLES

    shutil.copy(small_alliance / "B002.db", tmp_path / "B002.db")
    config = NodeConfig(branch_id="B002", db_url=f"sqlite:///{tmp_path / 'B002.db'}", node_dir=tmp_path / "node",
                        accept_non_private_jobs=True)
    write_node_config(config)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", config.policy_path)
    secret = create_secret_context()
    config.he_secret_path.parent.mkdir(parents=True)
    config.he_secret_path.write_bytes(secret_context_bytes(secret))
    settings = NodeDPSettings(enabled=True, clip=0.5, noise_multiplier=1e-6, nodes=4)
    job = JobSpec(job_id="node-dp", rounds=1, local_epochs=1, dp=DPSettings(enabled=False), node_dp=settings)
    agent = NodeAgent(config)
    reply = agent.train(TrainInstruction(job=job, round=1))
    assert reply.status == "ok" and reply.update.scheme == "CKKS", reply.code
    values = decrypt_vector(secret, EncryptedVector(length=reply.update.length, chunks=reply.update.chunks))
    assert values[-2] == pytest.approx(1.0, abs=1e-4) and values[-1] == pytest.approx(1.0, abs=1e-4)
    start = get_flat_weights(build_model(job.seed, lags=job.lags, horizon=job.horizon))
    assert np.linalg.norm(values[:-2] - start) <= 0.5 + 1e-3  # clipped (the noise here is negligible)
    training, = agent.lineage.events(job_id="node-dp", kind=EventKind.TRAINING)
    assert training.details["node_level_dp"]["clip"] == 0.5
    assert training.details["windows"] > 1  # a branch of many windows still weighs one
