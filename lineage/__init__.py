"""Lineage: an append-only record of every use of branch data, on each node and at the
coordinator. A leaf package: it imports neither `coordinator` nor `node_agent`."""

from lineage.models import EventKind, LineageEvent
from lineage.store import LineageStore

__all__ = ["EventKind", "LineageEvent", "LineageStore"]
