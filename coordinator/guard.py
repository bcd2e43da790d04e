"""Who sent a reply: the branch id in a reply must be the node that holds that branch's key.

Every node signs each reply with its lineage key, whose public half it registered with the
coordinator when it joined (`<coordinator>/node-lineage-keys/<branch>.pub`). A reply is
accepted only when its signature verifies under the named branch's key, and, within a job, a
branch stays bound to the Flower node it first answered from (and a node to its branch), so
neither a node nor anyone on the path can speak for another branch.
"""

from __future__ import annotations

from pathlib import Path

from common.wire import NodeReply
from lineage.signing import SigningKeyError, load_public_key, verify_signature


class ReplyGuard:
    def __init__(self, key_dir: Path) -> None:
        self.key_dir = Path(key_dir)
        self._keys: dict = {}
        self.branch_of: dict[int, str] = {}  # Flower node id -> branch
        self.node_of: dict[str, int] = {}  # branch -> Flower node id

    def problem(self, node_id: int, reply: NodeReply) -> str | None:
        """Why this reply from Flower node `node_id` is not accepted as the branch it names."""
        branch = reply.branch_id
        key = self._key(branch)
        if key is None:
            return f"branch '{branch}' has no registered lineage key"
        if not reply.signature or not verify_signature(key, reply.signature, reply.signed_body()):
            return f"reply is not signed by branch '{branch}'s registered key"
        if self.node_of.get(branch, node_id) != node_id:
            return f"branch '{branch}' already answered from another node"
        if self.branch_of.get(node_id, branch) != branch:
            return f"this node already answered as branch '{self.branch_of[node_id]}'"
        self.node_of[branch], self.branch_of[node_id] = node_id, branch
        return None

    def _key(self, branch: str):
        if branch not in self._keys:
            path = self.key_dir / f"{branch}.pub"
            try:
                self._keys[branch] = load_public_key(path) if "/" not in branch and path.is_file() else None
            except SigningKeyError:
                self._keys[branch] = None
        return self._keys[branch]
