"""`sovereign bench aggregation`: one round through the real codec, wire and strategy."""

import json

from typer.testing import CliRunner

from sovereign.cli import app

runner = CliRunner()


def bench(*args: str) -> dict:
    result = runner.invoke(app, ["bench", "aggregation", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_masked_round_sums_within_1e_3_at_about_8_bytes_per_parameter_even_with_a_dropout():
    ring = bench("--nodes", "5", "--params", "16382", "--dropped", "1")
    assert ring["scheme"] == "CKKS-ring" and ring["ckks"]["ring"]["digits"] == 1
    assert 0 < ring["max_error"] <= 1e-3
    assert 8.0 < ring["bytes_per_param"] < 8.1  # 16,384 values: two seeded, complex-packed ciphertexts
    assert {"ceremony", "setup_one_node", "sum", "unmask_one_node", "correction", "decrypt", "round"} <= set(ring["seconds"])


def test_an_encrypted_round_sums_within_1e_3_and_reports_its_bytes_per_parameter():
    ckks = bench("--nodes", "4", "--params", "5000", "--scheme", "ckks")
    plain = bench("--nodes", "4", "--params", "5000", "--plaintext")
    assert ckks["scheme"] == "CKKS" and plain["scheme"] == "plain"
    assert 0 < ckks["max_error"] <= 1e-3  # CKKS is approximate, but well inside the bound
    assert plain["max_error"] == 0.0
    assert plain["bytes_per_update"] == 8 * 5002  # float64: the parameters, the weight and the count
    # 5,002 values fill two 4,096-slot ciphertexts, one of them a fifth full
    assert ckks["bytes_per_update"] > 2 * 100_000 and ckks["bytes_per_param"] > 40
    assert set(ckks["seconds"]) == {"encode_one_node", "wire", "sum", "decrypt", "round"}


def test_a_round_without_nodes_is_a_one_line_error():
    for args, cause in ((["--nodes", "0"], "at least 1"), (["--scheme", "rot13"], "ring, ckks or plain"),
                        (["--nodes", "3", "--dropped", "2"], "at least two")):
        result = runner.invoke(app, ["bench", "aggregation", *args])
        assert result.exit_code == 2
        assert cause in result.output and "Traceback" not in result.output
