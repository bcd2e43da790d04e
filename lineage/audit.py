"""The stores an audit reads at once, with the keys to verify each and the anchors between
them: what `sovereign lineage ...` and the compliance console share.

Neither side is trusted: the node chain heads the coordinator recorded (in any of its events)
anchor the node chains, and the coordinator heads the nodes recorded (with each instruction
they answered) are held against the coordinator's chain and key (`lineage.anchors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lineage.anchors import COORDINATOR, check_coordinator_heads, coordinator_head_claims, published_node_heads
from lineage.chain import ChainReport
from lineage.models import GENESIS, LineageEvent
from lineage.signing import key_id, load_public_key
from lineage.store import LineageStore


@dataclass
class AuditScope:
    """Stores by label; `keys` verify every store, `store_keys` override them for one store
    (the coordinator service and the round loop both sign as `coordinator`, each with its key)."""

    stores: dict[str, LineageStore] = field(default_factory=dict)
    keys: dict[str, object] = field(default_factory=dict)  # actor -> public key
    store_keys: dict[str, dict[str, object]] = field(default_factory=dict)  # label -> actor -> public key
    anchors: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    run: bool = False
    faults: list = field(default_factory=list)  # ChainFault: node_heads records that cannot be read

    def events(self, **filters) -> list[LineageEvent]:
        out = [e for s in self.stores.values() for e in s.events(**filters)]
        return sorted(out, key=lambda e: (e.recorded_at, e.actor, e.seq or 0))

    def verify(self) -> dict[str, list[ChainReport]]:
        """Each store's chains, verified against its keys and the anchors."""
        return {label: s.verify({**self.keys, **self.store_keys.get(label, {})}, anchors=self.anchors)
                for label, s in self.stores.items()}

    def cross_check(self) -> list[tuple[str, str]]:
        """(chain, message) per actor whose records of the other side's head do not hold: the
        first fault, and how many more of its events disagree."""
        by_actor: dict[str, list] = {}
        for fault in [*self.faults, *self.coordinator_head_faults()]:
            by_actor.setdefault(fault.actor, []).append(fault)
        return [(f"{actor}: heads it recorded", faults[0].message
                 + (f" (and {len(faults) - 1} more of its events)" if len(faults) > 1 else ""))
                for actor, faults in by_actor.items()]

    def coordinator_head_faults(self) -> list:
        """Hold the round loop's chain and key to the coordinator heads the nodes recorded.

        Checked for a run, and for named stores when one of them holds the coordinator's chain.
        The key is the one the coordinator's chain is verified with: its published key when
        given, else the key its own store lists.
        """
        label = COORDINATOR if COORDINATOR in self.stores else next(
            (k for k, s in self.stores.items() if COORDINATOR in s.actors()), None)
        holder = self.stores.get(label)
        if holder is None and not self.run:
            return []
        claims = [c for s in self.stores.values() for actor in s.actors() if actor != COORDINATOR
                  for c in coordinator_head_claims(s.scan(actor))]
        if not claims:
            return []
        public = ({**self.keys, **self.store_keys.get(label, {})}.get(COORDINATOR)
                  or (holder.stored_public_keys().get(COORDINATOR) if holder else None))
        held = holder.hashes_at(COORDINATOR, (c.seq for c in claims if not c.malformed)) if holder else {}
        last = holder.last_seq(COORDINATOR) if holder else 0
        return check_coordinator_heads(claims, held, last, key_id(public) if public is not None else None, public_key=public)

    def reports(self, actors: set[str] | None = None) -> list[ChainReport]:
        """Every chain's report, and a failed report per cross-check that does not hold (for
        a compliance report that starts with integrity)."""
        reports = [r for rs in self.verify().values() for r in rs if actors is None or r.actor in actors]
        return reports + [ChainReport.model_validate({
            "actor": chain, "events": 0, "head_seq": 0, "head_hash": GENESIS,
            "fault": {"actor": chain, "seq": None, "event_id": None, "problem": "rewritten", "message": message}})
            for chain, message in self.cross_check()]

    def close(self) -> None:
        for s in self.stores.values():
            s.close()


def open_store(path: Path) -> LineageStore:
    """An existing SQLite lineage store, read as it is (reading never creates tables)."""
    return LineageStore(f"sqlite:///{path.resolve()}", create=False)


def add_run(scope: AuditScope, coordinator_dir: Path, nodes_dir: Path) -> AuditScope:
    """Add an embedded run's stores: the round loop's (label `coordinator`, verified against its
    published key) and each node's under `nodes_dir` (against the key the coordinator
    registered for it), anchored by the node heads the round loop recorded."""
    if (coordinator_dir / "lineage.db").is_file():
        scope.stores[COORDINATOR] = open_store(coordinator_dir / "lineage.db")
    key = coordinator_dir / "keys" / "lineage-ed25519.pub"
    if key.is_file():  # also without its store: the nodes' records of its head are still checked
        scope.store_keys.setdefault(COORDINATOR, {})[COORDINATOR] = load_public_key(key)
        scope.keys.setdefault(COORDINATOR, scope.store_keys[COORDINATOR][COORDINATOR])
    for node_db in sorted(nodes_dir.glob("*/lineage.db")):
        branch = node_db.parent.name
        scope.stores[branch] = open_store(node_db)
        registered = coordinator_dir / "node-lineage-keys" / f"{branch}.pub"
        if registered.is_file():
            scope.keys[branch] = load_public_key(registered)
    scope.run = True
    if COORDINATOR in scope.stores:
        # Every coordinator event that recorded node heads (aggregation, evaluation, release...).
        scope.anchors, scope.faults = published_node_heads(scope.stores[COORDINATOR].scan(COORDINATOR))
    return scope
