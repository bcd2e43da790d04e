"""The lineage store: a tamper-evident record of every data use, on every node and at the
coordinator. A leaf: it imports neither `coordinator` nor `node_agent`."""

from lineage.chain import ChainFault, ChainReport, compute_hash, verify_chain
from lineage.models import GENESIS, EventKind, LineageEvent
from lineage.signing import Signer, SigningKeyError, load_public_key
from lineage.store import LineageStore, LineageStoreError

__all__ = [
    "GENESIS", "ChainFault", "ChainReport", "EventKind", "LineageEvent", "LineageStore", "LineageStoreError",
    "Signer", "SigningKeyError", "compute_hash", "load_public_key", "verify_chain",
]
