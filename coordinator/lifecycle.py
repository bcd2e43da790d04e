"""A job's lifecycle: which step may follow which, and when a job may run. Pure rules, no I/O.

    draft ─request→ requested ─start→ running ─complete→ completed
                        │                  ├─fail→ failed
                        └─stop→ stopped ←──┘ stop

Each invited node answers a requested job once, approved or denied (a data owner's word,
signed by the node); a job may start only when at least `min_contributors` nodes approved
it, and a node that denied never trains on it. Completed, failed and stopped are final:
nothing moves a job out of them, so a replayed or late instruction cannot revive one.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    DRAFT = "draft"
    REQUESTED = "requested"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class Decision(str, Enum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


FINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.STOPPED})

# action -> (the states it may start from, the state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[JobState], JobState]] = {
    "request": (frozenset({JobState.DRAFT}), JobState.REQUESTED),
    "start": (frozenset({JobState.REQUESTED}), JobState.RUNNING),
    "complete": (frozenset({JobState.RUNNING}), JobState.COMPLETED),
    "fail": (frozenset({JobState.REQUESTED, JobState.RUNNING}), JobState.FAILED),
    "stop": (frozenset({JobState.DRAFT, JobState.REQUESTED, JobState.RUNNING}), JobState.STOPPED),
}


class LifecycleError(ValueError):
    """An action the job's state does not allow; the message says why, in one line."""


def next_state(state: JobState, action: str) -> JobState:
    """The state `action` leads to from `state`, or LifecycleError."""
    if action not in TRANSITIONS:
        raise LifecycleError(f"unknown action {action!r} (known: {', '.join(TRANSITIONS)})")
    sources, target = TRANSITIONS[action]
    if state not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise LifecycleError(f"cannot {action} a {state.value} job (only a {allowed} one)")
    return target


def check_decision(state: JobState, current: Decision, node: str) -> None:
    """A node decides a requested job once; afterwards its word stands."""
    if state is not JobState.REQUESTED:
        raise LifecycleError(f"node {node} cannot decide on a {state.value} job (only a requested one)")
    if current is not Decision.PENDING:
        raise LifecycleError(f"node {node} has already {current.value} this job")


def check_start(decisions: dict[str, Decision], min_contributors: int) -> list[str]:
    """The nodes that will train: those that approved, when they are at least
    `min_contributors`; else LifecycleError naming how many approved and how many wait."""
    approved = sorted(node for node, d in decisions.items() if d is Decision.APPROVED)
    if len(approved) < min_contributors:
        pending = sum(d is Decision.PENDING for d in decisions.values())
        raise LifecycleError(f"{len(approved)} of {len(decisions)} nodes approved, the job needs {min_contributors} "
                             f"({pending} have not decided)")
    return approved
