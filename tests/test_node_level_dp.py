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
