"""Neither side trusts the other: each keeps the other's chain head, and `sovereign lineage
verify --run` holds each chain to what the other side recorded.

- Node chains are anchored by the node heads the coordinator recorded in ANY of its events
  (aggregation, evaluation, release...), so a node cannot drop the events behind a reply.
- The coordinator's chain is held to the coordinator heads the nodes recorded with every
  instruction they answered (seq, hash, key id): re-signing it with a new key, rewriting it or
  truncating it is named at the node event that shows it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from lineage import GENESIS, EventKind, LineageEvent, LineageStore, Signer, verify_chain
from lineage.anchors import (
    CoordinatorHeadClaim,
    check_coordinator_heads,
    coordinator_head_claims,
    head_message,
    published_node_heads,
)
from lineage.signing import public_pem
from sovereign.cli import app

JOB = "job-7"
BRANCHES = ("B001", "B002")


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def build_run(root: Path) -> Path:
    """A small embedded run as the coordinator and nodes record it: per instruction, the node
    records the coordinator head it received in the event of its reply; the coordinator records
    the node heads of the replies in the event that follows (3 aggregations, an evaluation, a
    release). Keys are where `--run` finds them."""
    coordinator_dir = root / "coordinator"
    coordinator_dir.mkdir(parents=True)
    coordinator = LineageStore(_url(coordinator_dir / "lineage.db"))
    boss = Signer.load_or_create("coordinator", coordinator_dir / "keys")
    nodes, signers = {}, {}
    for branch in BRANCHES:
        (root / "nodes" / branch).mkdir(parents=True)
        nodes[branch] = LineageStore(_url(root / "nodes" / branch / "lineage.db"))
        signers[branch] = Signer.load_or_create(branch, root / "node-keys" / branch)  # kept node side
        (coordinator_dir / "node-lineage-keys").mkdir(parents=True, exist_ok=True)
        (coordinator_dir / "node-lineage-keys" / f"{branch}.pub").write_text(public_pem(signers[branch].public_key))

    def exchange(message: str, rnd: int, kind: EventKind, **fields) -> None:
        seq, event_hash = coordinator.head("coordinator")
        head = {"seq": seq, "event_hash": event_hash, "key_id": boss.key_id,
                "signature": boss.sign(head_message(seq, event_hash, boss.key_id))}
        heads = {}
        for branch in BRANCHES:
            nodes[branch].append(LineageEvent(kind=EventKind.DATA_READ, actor=branch, job_id=JOB, round=rnd,
                                              purpose="forecasting", dataset="sales", fields=["sales.vin"]), signers[branch])
            sent = nodes[branch].append(LineageEvent(
                kind=EventKind.EMISSION, actor=branch, job_id=JOB, round=rnd, purpose="forecasting", digest=f"{rnd:064x}",
                details={"destination": "coordinator", "message": message, "coordinator_head": head}), signers[branch])
            heads[branch] = [sent.seq, sent.event_hash]
        coordinator.append(LineageEvent(kind=kind, actor="coordinator", job_id=JOB, round=rnd, purpose="forecasting",
                                        details={"node_heads": heads, **fields}), boss)

    for rnd in (1, 2, 3):
        exchange("train", rnd, EventKind.AGGREGATION, contributors={})
    exchange("evaluate", 3, EventKind.EVALUATION)
    exchange("release", 3, EventKind.MODEL_RELEASE)
    for store in (coordinator, *nodes.values()):
        store.close()
    return root


@pytest.fixture
def run(tmp_path):
    return build_run(tmp_path / "run")


def table_rows(output: str) -> list[list[str]]:
    """The rows of a rich table, each cell's folded lines joined again."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{a} {b}".strip() if b else a for a, b in zip(rows[-1], cells)]
    return rows


def verify(run_dir: Path):
    """Exit code, and the rows of the integrity table as one line each: `store | chain | status`."""
    result = CliRunner().invoke(app, ["lineage", "verify", "--run", str(run_dir)])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, "\n".join(f"{r[0]} | {r[1]} | {r[3]}" for r in table_rows(result.output))


def sql(db: Path, *statements: str) -> None:
    engine = create_engine(_url(db))
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def coordinator_events(run_dir: Path) -> list[LineageEvent]:
    store = LineageStore(_url(run_dir / "coordinator" / "lineage.db"))
    try:
        return store.events(actor="coordinator")
    finally:
        store.close()


def reseal(run_dir: Path, signer: Signer, edit=lambda e: e) -> None:
    """The coordinator writes its chain anew (each event passed through `edit`), sealed by
    `signer`, over its store: every hash and signature in it is valid."""
    events = coordinator_events(run_dir)
    fresh_path = run_dir / "coordinator" / "fresh.db"
    fresh = LineageStore(_url(fresh_path))
    for event in events:
        fresh.append(edit(event).model_copy(update={"seq": None, "prev_hash": None, "event_hash": None,
                                                    "signer": None, "signature": None}), signer)
    fresh.close()
    shutil.move(fresh_path, run_dir / "coordinator" / "lineage.db")


def test_an_untouched_run_verifies(run):
    code, out = verify(run)
    assert code == 0, out
    assert "heads it recorded" not in out


# ------------------------------------------------------------ the node chains' anchors (A1)
def test_anchors_come_from_every_coordinator_event_that_recorded_node_heads(run):
    anchors, faults = published_node_heads(coordinator_events(run))
    assert not faults
    # 5 events of 3 kinds recorded heads: aggregation x3, evaluation, release
    assert {b: len(a) for b, a in anchors.items()} == {"B001": 5, "B002": 5}
    assert max(anchors["B001"])[0] == 10  # the release reply: the node's 10th event


def test_a_node_that_drops_the_events_after_the_last_aggregation_is_caught_by_later_heads(run):
    """The evaluation and release replies are anchored too, not only the training ones."""
    db = run / "nodes" / "B001" / "lineage.db"
    sql(db, "DELETE FROM lineage_chain_fields WHERE seq > 6", "DELETE FROM lineage_chain_events WHERE seq > 6",
        "UPDATE lineage_chain_heads SET seq = 6, event_hash = (SELECT event_hash FROM lineage_chain_events WHERE seq = 6)")
    code, out = verify(run)
    assert code == 1 and "B001: chain ends at event 6 but B001 published a head at event 8 (and later ones, up to " \
                         "event 10)" in out  # the evaluation reply (8) and the release reply (10)


def test_a_node_that_rewrites_an_evaluation_reply_is_caught(run):
    """The node re-seals its chain from event 8 (its evaluation reply) on with its own key."""
    db = run / "nodes" / "B001" / "lineage.db"
    store = LineageStore(_url(db))
    events = store.events(actor="B001")
    store.close()
    signer = Signer.load_or_create("B001", run / "node-keys" / "B001")
    fresh_path = db.with_name("fresh.db")
    fresh = LineageStore(_url(fresh_path))
    for event in events:
        if event.seq == 8:
            event = event.model_copy(update={"details": {**event.details, "destination": "elsewhere"}})
        fresh.append(event.model_copy(update={"seq": None, "prev_hash": None, "event_hash": None}), signer)
    fresh.close()
    shutil.move(fresh_path, db)
    code, out = verify(run)
    assert code == 1 and "B001 event 8 (emission" in out and "differs from the head B001 published" in out


def test_every_anchor_at_a_position_must_match():
    signer = Signer.generate("B001")
    store = LineageStore("sqlite://")
    event = store.append(LineageEvent(kind=EventKind.EMISSION, actor="B001", job_id=JOB, purpose="forecasting"), signer)
    other = "f" * 64
    for anchors in ([(1, event.event_hash), (1, other)], [(1, other), (1, event.event_hash)]):
        report = verify_chain("B001", [event], signer.public_key, signer.key_id, anchors=anchors)
        assert report.fault is not None and report.fault.seq == 1 and "published" in report.fault.message
    assert verify_chain("B001", [event], signer.public_key, signer.key_id, anchors=[(1, event.event_hash)] * 2).ok


def test_unreadable_node_heads_are_reported_not_crashed_on():
    good = LineageEvent(kind=EventKind.EVALUATION, actor="coordinator", job_id=JOB, purpose="p", seq=1,
                        details={"node_heads": {"B001": [3, "a" * 64]}})
    bad = [LineageEvent(kind=EventKind.MODEL_RELEASE, actor="coordinator", job_id=JOB, purpose="p", seq=i + 2, details=d)
           for i, d in enumerate([{"node_heads": ["B001"]}, {"node_heads": {"B001": [3]}},
                                  {"node_heads": {"B001": ["x", "a" * 64]}}, {"node_heads": {"B001": [3, "VIN"]}}])]
    anchors, faults = published_node_heads([good, *bad])
    assert anchors == {"B001": [(3, "a" * 64)]}
    assert [(f.seq, f.problem) for f in faults] == [(2, "malformed"), (3, "malformed"), (4, "malformed"), (5, "malformed")]


# ---------------------------------------------- the coordinator's chain, held by the nodes (A2)
def test_a_coordinator_that_resigns_its_chain_with_a_new_key_is_caught(run):
    """It re-seals every event with a new key and publishes the new public key: its chain now
    verifies against 'its' key, but the nodes recorded the id of the key it signed with."""
    new_key = Signer.generate("coordinator")
    reseal(run, new_key)
    (run / "coordinator" / "keys" / "lineage-ed25519.pub").write_text(public_pem(new_key.public_key))
    code, out = verify(run)
    assert code == 1
    assert "coordinator | coordinator | verified" in out  # on its own the re-signed chain is self-consistent...
    # ...but the first node event that recorded a coordinator head names the mismatch
    assert "B001 event 2 (emission" in out and f"the coordinator key verified against is {new_key.key_id}" in out
    assert "re-signed with another key" in out and "(and 4 more of its events)" in out


def test_a_coordinator_that_rewrites_its_chain_with_its_own_key_is_caught(run):
    """It edits its evaluation event (seq 4) and re-seals from there with its own key."""
    boss = Signer.load_or_create("coordinator", run / "coordinator" / "keys")

    def edit(event: LineageEvent) -> LineageEvent:
        if event.kind == EventKind.EVALUATION:
            return event.model_copy(update={"details": {**event.details, "refused": {"B002": "made up"}}})
        return event

    reseal(run, boss, edit)
    code, out = verify(run)
    assert code == 1
    assert "coordinator | coordinator | verified" in out
    # the release instruction carried head 4: each node's release reply (its event 10) shows the rewrite
    assert "B001 event 10 (emission" in out and "coordinator's chain rewritten" in out
    assert "B002 event 10 (emission" in out


def test_a_coordinator_that_truncates_its_chain_is_caught(run):
    sql(run / "coordinator" / "lineage.db", "DELETE FROM lineage_chain_events WHERE seq > 3",
        "UPDATE lineage_chain_heads SET seq = 3, event_hash = (SELECT event_hash FROM lineage_chain_events WHERE seq = 3)")
    code, out = verify(run)
    assert code == 1 and "coordinator | coordinator | verified" in out
    assert "B001 event 10 (emission" in out and "coordinator's chain ends at event 3" in out and "truncated" in out


def test_a_run_whose_coordinator_store_is_gone_fails(run):
    (run / "coordinator" / "lineage.db").unlink()
    code, out = verify(run)
    assert code == 1 and "chain ends at event 0" in out


@pytest.mark.parametrize("stored", [
    {"seq": 1, "event_hash": "a" * 64},                       # no key id
    {"seq": "1", "event_hash": "a" * 64, "key_id": "b" * 32},  # seq not a number
    {"seq": 1, "event_hash": "VIN", "key_id": "b" * 32},
    "1:aaaa",
])
def test_an_unreadable_coordinator_head_is_named(stored):
    event = LineageEvent(kind=EventKind.EMISSION, actor="B001", job_id=JOB, purpose="p", seq=4,
                         details={"coordinator_head": stored})
    claims = list(coordinator_head_claims([event]))
    faults = check_coordinator_heads(claims, {1: "a" * 64}, 1, "b" * 32)
    assert [(f.actor, f.seq, f.problem) for f in faults] == [("B001", 4, "malformed")]
    assert faults[0].message.startswith("B001 event 4 (emission")


def test_the_pure_check():
    def claim(seq, event_hash, key="b" * 32, node_seq=9):
        event = LineageEvent(kind=EventKind.EMISSION, actor="B002", job_id=JOB, purpose="p", seq=node_seq)
        return CoordinatorHeadClaim(event, seq, event_hash, key)

    held = {1: "1" * 64, 2: "2" * 64}
    assert check_coordinator_heads([claim(0, GENESIS), claim(1, "1" * 64), claim(2, "2" * 64)], held, 2, "b" * 32) == []
    cases = [(claim(0, "1" * 64), "rewritten"), (claim(2, "3" * 64), "rewritten"), (claim(3, "3" * 64), "truncated"),
             (claim(1, "1" * 64, key="c" * 32), "resigned")]
    for c, problem in cases:
        fault, = check_coordinator_heads([c], held, 2, "b" * 32)
        assert (fault.actor, fault.seq, fault.problem) == ("B002", 9, problem)
    fault, = check_coordinator_heads([claim(1, "1" * 64)], {}, 2, "b" * 32)  # a hole: the coordinator's own verify also says so
    assert fault.problem == "truncated" and "has no event 1" in fault.message
    fault, = check_coordinator_heads([claim(1, "1" * 64)], held, 2, None)
    assert fault.problem == "resigned" and "no coordinator public key" in fault.message
    assert list(coordinator_head_claims([LineageEvent(kind=EventKind.REFUSAL, actor="B002", job_id=JOB, purpose="p",
                                                      details={"coordinator_head": None})])) == []


def test_the_compliance_report_carries_the_cross_check(run, tmp_path):
    sql(run / "coordinator" / "lineage.db", "DELETE FROM lineage_chain_events WHERE seq > 3",
        "UPDATE lineage_chain_heads SET seq = 3, event_hash = (SELECT event_hash FROM lineage_chain_events WHERE seq = 3)")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["lineage", "export", "--run", str(run), "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "TAMPERED: B001 event 10 (emission" in out.read_text()


def test_the_first_instruction_carries_the_empty_chain(run):
    """Before its first event the coordinator's head is (0, genesis): a valid record, checked
    as such by the untouched run verifying."""
    store = LineageStore(_url(run / "nodes" / "B001" / "lineage.db"))
    first = store.events(kind=EventKind.EMISSION)[0]
    store.close()
    assert (first.details["coordinator_head"]["seq"], first.details["coordinator_head"]["event_hash"]) == (0, GENESIS)


def test_a_node_cannot_frame_the_coordinator_with_a_head_it_was_never_sent(run):
    """A node records a coordinator head of its own making (a hash the coordinator never had
    at that position): without the coordinator's signature over it, the claim is named forged
    rather than taken as proof that the coordinator rewrote its chain."""
    forger = Signer.load_or_create("B001", run / "node-keys" / "B001")
    store = LineageStore(_url(run / "nodes" / "B001" / "lineage.db"))
    coordinator_key = Signer.load_or_create("coordinator", run / "coordinator" / "keys")
    fake = {"seq": 1, "event_hash": "e" * 64, "key_id": coordinator_key.key_id, "signature": forger.sign(b"not the coordinator")}
    store.append(LineageEvent(kind=EventKind.EMISSION, actor="B001", job_id=JOB, round=4, purpose="forecasting",
                              digest="f" * 64, details={"message": "train", "coordinator_head": fake}), forger)
    store.close()
    claims = [c for c in coordinator_head_claims(LineageStore(_url(run / "nodes" / "B001" / "lineage.db")).scan("B001"))
              if c.event_hash == "e" * 64]
    fault, = check_coordinator_heads(claims, {1: "e" * 64}, 5, coordinator_key.key_id, public_key=coordinator_key.public_key)
    assert fault.problem == "forged" and "no valid signature" in fault.message
