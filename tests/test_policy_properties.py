"""Property: whatever the policy, schema and job, no value of a restricted field, an
unclassified field, or a personal field that no rule treats, ever comes out of `release`."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.document import JobRequest, PolicyDocument
from policies.rules import evaluate, release
from tests.policy_strategies import CLASSES, rule_dicts

TREATMENTS = ["allow", "drop", "redact", "null", {"hash": "node-key"}, {"mask": {"show_last": 2}},
              {"generalise": {"to": "prefix", "keep": 2}}]
FIELDS = [f"c{i}" for i in range(8)]


@st.composite
def scenario(draw):
    classes = {f: draw(st.sampled_from(CLASSES + [None])) for f in FIELDS}
    rules = draw(rule_dicts([f"t.{f}" for f in FIELDS], TREATMENTS, max_rules=8, roles=False))
    policy = PolicyDocument.model_validate({
        "policy": "p", "version": 1, "jurisdiction": "JP",
        "tables": {"t": {f: c for f, c in classes.items() if c is not None}}, "rules": rules,
    })
    job = JobRequest(job_id="j", purpose=draw(st.sampled_from(["forecasting", "statistics"])),
                     destination=draw(st.sampled_from(["JP", "KR"])))
    return policy, job, classes


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(scenario())
def test_protected_values_never_leave(case):
    policy, job, classes = case
    decisions = evaluate(policy, {"t": FIELDS}, job)
    row = {f: f"CANARY-{f}-7731" for f in FIELDS}
    out = release(decisions, row, table="t", key=b"node-key")
    text = repr(out)
    by_field = {d.field: d for d in decisions}
    for f in FIELDS:
        cls = classes[f]
        explicitly_allowed = by_field[f].rule not in ("default-deny", "deny-unclassified")
        if cls in (None, "restricted") or (cls == "personal" and not explicitly_allowed):
            assert row[f] not in text, (f, cls, by_field[f])
            assert f not in out or cls not in (None, "restricted")
        if by_field[f].treatment.kind in ("hash", "redact", "null", "drop"):
            assert row[f] not in text  # treated values never carry the raw value
