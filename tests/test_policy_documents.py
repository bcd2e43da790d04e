"""Policy files as compliance officers write them: loading, linting, deciding, explaining."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from policies.document import JobRequest
from policies.document import FieldClass
from policies.loader import PolicyFileError, load_policy
from policies.rules import JobRefusal, check_request, evaluate, lint
from policies.treatments import TreatmentSpec, apply

EXAMPLES = Path(__file__).resolve().parents[1] / "policies" / "examples"
SCHEMA = {"sales": ["sale_date", "vin", "sale_price", "customer_name", "customer_phone", "customer_national_id", "loyalty_tier"]}


def job(**kw) -> JobRequest:
    return JobRequest(**{"job_id": "j1", "purpose": "forecasting", "destination": "JP", **kw})


@pytest.mark.parametrize("name", ["domestic_dealer", "foreign_dealer", "strict_dealer"])
def test_examples_load_and_lint_clean(name):
    policy = load_policy(EXAMPLES / f"{name}.yaml")
    assert lint(policy) == []
    assert len(policy.content_hash()) == 64


def test_cross_border_masks_at_the_foreign_dealer_only():
    request = job(fields=["sales.sale_date", "sales.vin"])
    home = {d.field: d for d in evaluate(load_policy(EXAMPLES / "domestic_dealer.yaml"), SCHEMA, request)}
    abroad = {d.field: d for d in evaluate(load_policy(EXAMPLES / "foreign_dealer.yaml"), SCHEMA, request)}
    assert home["sale_date"].treatment.kind == "allow"
    assert abroad["sale_date"].treatment == TreatmentSpec(kind="generalise", to="month")
    assert abroad["sale_date"].rule == "dates-to-month-abroad"
    assert abroad["vin"].treatment.kind == "hash" and home["vin"].treatment.kind == "allow"
    for decisions in (home, abroad):
        assert decisions["customer_name"].treatment.kind == "drop"
        assert decisions["customer_national_id"].rule == "national-id-never-read"
        assert decisions["loyalty_tier"].rule == "deny-unclassified"  # schema drift: a new column


def test_purpose_and_role_pick_the_treatment():
    policy = load_policy(EXAMPLES / "domestic_dealer.yaml")
    dedup = {d.field: d for d in evaluate(policy, SCHEMA, job(purpose="deduplication"))}
    assert dedup["customer_phone"].treatment.kind == "hash"
    strict = load_policy(EXAMPLES / "strict_dealer.yaml")
    as_marketing = {d.field: d for d in evaluate(strict, SCHEMA, job(recipient_role="marketing"))}
    assert as_marketing["sale_date"].rule == "default-deny"


def test_job_asking_for_a_restricted_field_is_refused():
    policy = load_policy(EXAMPLES / "domestic_dealer.yaml")
    request = job(fields=["sales.sale_date", "sales.customer_national_id"])
    with pytest.raises(JobRefusal, match="restricted field sales.customer_national_id"):
        check_request(evaluate(policy, SCHEMA, request), request)
    with pytest.raises(JobRefusal, match="unknown field sales.colour"):
        check_request(evaluate(policy, SCHEMA, job(fields=["sales.colour"])), job(fields=["sales.colour"]))


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


BASE = """policy: t
version: 2
jurisdiction: JP
tables:
  sales: {sale_date: internal, customer_national_id: restricted}
rules:
"""


@pytest.mark.parametrize(
    "rules, cause, line",
    [
        ("  - id: r1\n    treatment: obfuscate\n", "rules.0.treatment.kind", 8),
        ("  - id: r1\n    match: {class: secret}\n    treatment: drop\n", "rules.0.match", 8),
        ("  - id: r1\n    treatment: {mask: {}}\n", "mask needs show_last", 8),
        ("  - id: r1\n    treatment: drop\n    colour: red\n", "rules.0.colour", 9),
    ],
)
def test_bad_policy_files_name_file_line_and_field(tmp_path, rules, cause, line):
    path = _write(tmp_path, BASE + rules)
    with pytest.raises(PolicyFileError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and cause in message and "\n" not in message
    assert info.value.line == line


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(PolicyFileError, match=r"policy.yaml:2: not valid YAML"):
        load_policy(_write(tmp_path, "policy: t\n  version: 1\ntables: {}\n"))


def test_lint_catches_unknown_fields_contradictions_and_released_restricted_fields(tmp_path):
    policy = load_policy(_write(tmp_path, BASE + (
        "  - id: r1\n    match: {field: sales.colour}\n    treatment: allow\n"
        "  - id: r2\n    match: {field: sales.customer_national_id}\n    treatment: {hash: node-key}\n"
        "  - id: r3\n    match: {class: internal}\n    treatment: allow\n"
        "  - id: r4\n    match: {class: internal}\n    treatment: drop\n"
    )))
    messages = {(f.line, f.message) for f in lint(policy)}
    assert (7, "rule r1: unknown field sales.colour") in messages
    assert any(line == 10 and "restricted" in m for line, m in messages)
    assert any(line == 16 and "contradicts rule r3 (line 13)" in m for line, m in messages)
    # Evaluation fails closed even on a policy lint would refuse.
    decisions = {d.field: d for d in evaluate(policy, {"sales": ["customer_national_id"]}, job())}
    assert decisions["customer_national_id"].treatment.kind == "drop"


def test_treatments():
    key_a, key_b = b"node-a", b"node-b"
    assert apply(TreatmentSpec(kind="hash"), "+81-90-1234-5678", key=key_a) != apply(TreatmentSpec(kind="hash"), "+81-90-1234-5678", key=key_b)
    assert apply(TreatmentSpec(kind="mask", show_last=4), "JN1AZ4EH7DM430111", key=key_a) == "*" * 13 + "0111"
    assert apply(TreatmentSpec(kind="generalise", to="quarter"), "2024-05-17", key=key_a) == "2024-Q2"
    assert apply(TreatmentSpec(kind="generalise", to="bucket", width=5000), 31250.0, key=key_a) == "30000-35000"
    assert apply(TreatmentSpec(kind="generalise", to="prefix", keep=3), "150-0001", key=key_a) == "150*"
    assert apply(TreatmentSpec(kind="redact"), "Alice", key=key_a) == "[REDACTED]"
    with pytest.raises(ValueError):
        apply(TreatmentSpec(kind="drop"), "x", key=key_a)


def test_policy_cli_lint_and_explain(tmp_path):
    from sovereign.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["policy", "lint", str(EXAMPLES / "foreign_dealer.yaml")])
    assert ok.exit_code == 0 and "is valid" in ok.output
    bad = _write(tmp_path, BASE + "  - id: r1\n    match: {field: sales.colour}\n    treatment: allow\n")
    result = runner.invoke(app, ["policy", "lint", str(bad)])
    assert result.exit_code == 1 and f"{bad}:7: error: rule r1: unknown field sales.colour" in result.output
    job_file = tmp_path / "job.yaml"
    job_file.write_text("job_id: j1\npurpose: forecasting\ndestination: JP\nfields: [sales.sale_date]\n")
    explained = runner.invoke(app, ["policy", "explain", "--policy", str(EXAMPLES / "foreign_dealer.yaml"), "--job", str(job_file)])
    assert explained.exit_code == 0, explained.output
    assert "dates-to-month-abroad" in explained.output and "generalise to month" in explained.output
    job_file.write_text("job_id: j1\npurpose: forecasting\ndestination: JP\nfields: [sales.customer_national_id]\n")
    refused = runner.invoke(app, ["policy", "explain", "--policy", str(EXAMPLES / "domestic_dealer.yaml"), "--job", str(job_file)])
    assert refused.exit_code == 1 and "refused: job j1 asks for restricted field" in refused.output
    assert FieldClass.RESTRICTED.value in refused.output


def test_policy_explain_on_a_real_database_flags_schema_drift(tmp_path, small_alliance):
    import shutil

    from sqlalchemy import create_engine, text

    from sovereign.cli import app

    db = tmp_path / "branch.db"
    shutil.copy(small_alliance / "B001.db", db)
    args = ["policy", "explain", "--policy", str(EXAMPLES / "domestic_dealer.yaml"),
            "--job", str(EXAMPLES / "jobs" / "monthly_forecast.yaml"), "--db", f"sqlite:///{db}"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE sales ADD COLUMN loyalty_tier TEXT"))
    engine.dispose()
    drifted = runner.invoke(app, args)
    assert drifted.exit_code == 1
    assert "domestic_dealer.yaml:6: sales.loyalty_tier: in the database but not classified (schema drift)" in drifted.output
    assert "Traceback" not in drifted.output


def test_policy_explain_reads_a_plain_file_path_and_never_creates_a_database(tmp_path, small_alliance):
    import shutil

    from sovereign.cli import app

    db = tmp_path / "branch.db"
    shutil.copy(small_alliance / "B001.db", db)
    before = db.read_bytes()
    base = ["policy", "explain", "--policy", str(EXAMPLES / "domestic_dealer.yaml"),
            "--job", str(EXAMPLES / "jobs" / "monthly_forecast.yaml"), "--db"]
    runner = CliRunner()
    plain = runner.invoke(app, [*base, str(db)])
    assert plain.exit_code == 0, plain.output
    assert db.read_bytes() == before  # opened read-only
    for missing in (str(tmp_path / "typo.db"), f"sqlite:///{tmp_path / 'typo.db'}"):
        result = runner.invoke(app, [*base, missing])
        assert result.exit_code == 2 and "no such database file" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "typo.db").exists()
    garbage = runner.invoke(app, [*base, "not a url://"])
    assert garbage.exit_code == 2 and "neither a database file nor a SQLAlchemy URL" in garbage.output
