"""The policy engine's first rules: personal and restricted fields are never read,
unclassified fields are denied, every decision cites its rule, and the hash tracks content."""

from policies import FieldClass, Policy, Treatment, allowed_fields, default_dealer_policy, evaluate, policy_hash


def test_personal_restricted_and_unclassified_are_dropped():
    policy = default_dealer_policy()
    columns = ["sale_date", "customer_name", "customer_national_id", "loyalty_tier"]
    decisions = {d.field: d for d in evaluate(policy, "sales", columns, "forecasting")}
    assert decisions["sale_date"].treatment is Treatment.ALLOW
    assert decisions["customer_name"].treatment is Treatment.DROP and decisions["customer_name"].rule == "drop-personal"
    assert decisions["customer_national_id"].field_class is FieldClass.RESTRICTED
    assert decisions["customer_national_id"].treatment is Treatment.DROP
    assert decisions["loyalty_tier"].rule == "deny-unclassified" and decisions["loyalty_tier"].field_class is None
    assert allowed_fields(list(decisions.values())) == ["sale_date"]


def test_hash_changes_with_content_not_with_dict_order():
    policy = default_dealer_policy()
    reordered = Policy(name=policy.name, version=policy.version, tables={
        t: dict(reversed(list(fields.items()))) for t, fields in reversed(list(policy.tables.items()))
    })
    assert policy_hash(reordered) == policy_hash(policy)
    changed = Policy(name=policy.name, version=policy.version, tables={
        **policy.tables, "sales": {**policy.tables["sales"], "model": FieldClass.PERSONAL},
    })
    assert policy_hash(changed) != policy_hash(policy)
