"""A Flower Grid in one process, for tests of the round loop: every message goes through the
node's real ClientApp handler (`node_agent.client_app._handle`, decode, agent, encode), with
no Ray and no network, so round-loop behaviour (dropouts, crashes, resumption) is quick to test.

`gone` holds nodes that have gone away: their messages come back as the error reply Flower's
SuperLink makes for a node whose heartbeat expired (NODE_UNAVAILABLE).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from node_agent.client_app import _handle

NODE_UNAVAILABLE = 5  # flwr.common.constant.ErrorCode.NODE_UNAVAILABLE


@dataclass
class LoopbackGrid:
    nodes_root: Path  # holds index.json: Flower node id i is the i-th node listed (a simulated partition)
    gone: set[int] = field(default_factory=set)
    sent: list[tuple[int, str, int]] = field(default_factory=list)  # (node, message type, round)
    _replies: dict[str, object] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what a ServerApp process has set before it builds messages

    def get_node_ids(self) -> list[int]:
        return list(range(len(json.loads((self.nodes_root / "index.json").read_text())["nodes"])))

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for msg in messages:
            mid = f"m{next(self._ids)}"
            node, kind = msg.metadata.dst_node_id, msg.metadata.message_type
            self.sent.append((node, kind, int(msg.metadata.group_id)))
            if node in self.gone:
                reply = SimpleNamespace(has_error=lambda: True, has_content=lambda: False,
                                        error=SimpleNamespace(code=NODE_UNAVAILABLE, reason="node is offline"))
            else:
                context = Context(run_id=1, node_id=node, node_config={"partition-id": node}, state=RecordDict(),
                                  run_config={"nodes-root": str(self.nodes_root)})
                answer = _handle(msg, context, kind)
                reply = SimpleNamespace(has_error=lambda: False, has_content=lambda: True, content=answer.content)
            reply.metadata = SimpleNamespace(reply_to_message_id=mid, src_node_id=node)
            self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, ids: list[str]) -> list:
        return [self._replies.pop(i) for i in ids if i in self._replies]
