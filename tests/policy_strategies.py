"""Hypothesis strategies shared by the policy property tests: random rules as a compliance
officer might write them (any match keys, any treatment)."""

from __future__ import annotations

from hypothesis import strategies as st

CLASSES = ["public", "internal", "confidential", "personal", "restricted"]
PURPOSES = ["forecasting", "statistics"]
ROLES = ["analyst", "marketing"]


@st.composite
def rule_dicts(draw, fields: list[str], treatments: list, *, max_rules: int, roles: bool = True) -> list[dict]:
    """Up to `max_rules` rules (as YAML would load them) over `table.field` names in `fields`."""
    rules = []
    for i in range(draw(st.integers(0, max_rules))):
        match = {}
        if draw(st.booleans()):
            match["field"] = [draw(st.sampled_from(fields))]
        if draw(st.booleans()):
            match["class"] = draw(st.lists(st.sampled_from(CLASSES), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            match["purpose"] = [draw(st.sampled_from(PURPOSES))]
        if draw(st.booleans()):
            match["cross_border"] = draw(st.booleans())
        if roles and draw(st.booleans()):
            match["recipient_role"] = [draw(st.sampled_from(ROLES))]
        rules.append({"id": f"r{i}", "match": match, "treatment": draw(st.sampled_from(treatments))})
    return rules
