"""The subsets a job reports (new stores, launch windows) are released under the same discipline as the rest."""

from __future__ import annotations

import numpy as np
import pytest

from common import evaluation
from common.evaluation import GROUPS, alliance_figures, in_launch_window, metric_vector, release_values

SCORES = {arm: {"mase": 1.0, "smape": 10.0, "mae": 2.0} for arm in evaluation.ARMS}


def _vector(young=False, new=False, launch=False) -> np.ndarray:
    return metric_vector(SCORES, young=young or new, new_store=new, launch_window=launch)


def _released(vectors: list[np.ndarray], min_contributors: int = 3) -> dict[str, int]:
    figures = alliance_figures(list(release_values(np.sum(vectors, axis=0), min_contributors)))
    return {g: figures[g]["nodes"] for g in GROUPS}


def test_every_group_is_released_when_each_overlap_is_large_enough():
    vectors = ([_vector()] * 3 + [_vector(launch=True)] * 3 + [_vector(young=True)] * 3
               + [_vector(young=True, launch=True)] * 3 + [_vector(new=True)] * 3 + [_vector(new=True, launch=True)] * 3)
    assert _released(vectors) == {"all": 18, "young": 12, "new_stores": 6, "launch_window": 9}


def test_a_group_that_would_leave_one_branch_as_a_difference_is_withheld():
    # young minus new stores would be the one young branch that is not new
    vectors = [_vector()] * 4 + [_vector(young=True)] + [_vector(new=True)] * 3
    released = _released(vectors)
    assert released["all"] == 8 and released["young"] * released["new_stores"] == 0


def test_the_launch_window_cannot_isolate_a_branch_through_the_groups_it_misses():
    # no young branch is in a launch window, so all - young - launch_window = the two established
    # branches outside it: one of the groups must go
    vectors = [_vector()] * 2 + [_vector(launch=True)] * 3 + [_vector(young=True)] * 3
    released = _released(vectors)
    assert released["all"] == 8 and released["young"] * released["launch_window"] == 0
    # with a third established branch outside launch windows, all three can be released
    assert _released([*vectors, _vector()]) == {"all": 9, "young": 3, "new_stores": 0, "launch_window": 3}


def test_the_membership_counts_never_leave():
    summed = np.sum([_vector(launch=True)] * 5, axis=0)
    out = release_values(summed, 3)
    assert not out[evaluation.MEMBERSHIP_AT:].any()
    assert evaluation.CEILINGS.size == evaluation.LENGTH == summed.size


def test_a_new_store_is_young_and_one_cell_counts_it():
    with pytest.raises(ValueError, match="young"):
        metric_vector(SCORES, young=False, new_store=True)
    v = _vector(new=True, launch=True)
    assert v[evaluation.MEMBERSHIP_AT:].tolist() == [0, 0, 0, 0, 0, 1]


def test_a_launch_window_holds_a_launch_in_the_held_out_months():
    assert in_launch_window(100, 6, (95, 105)) and not in_launch_window(100, 6, (99, 106))
