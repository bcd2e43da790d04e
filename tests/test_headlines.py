"""Headlines that cannot mislead: always against the best a branch can do alone and against
seasonal naive; a diverged arm is named, never quoted as a ratio."""

from __future__ import annotations

from sovereign.demo import headlines
from sovereign.report import headline_lines


def _summary(mase: dict) -> dict:
    versus = {"ets": {"federated_better_on": 7, "geomean": 0.97, "interval95": [0.9, 1.04]}}
    lines = headlines(dict(mase), versus, dp=True)
    return {"mase": {**mase, "best_local": mase.get(lines["best_local_arm"])}, "branches_evaluated": 20, **lines}


def test_the_headline_compares_with_the_best_local_method_and_seasonal_naive():
    summary = _summary({"federated": 0.62, "local": 0.65, "local_dp": 0.69, "seasonal_naive": 0.84,
                        "moving_average_3": 0.76, "mean_12": 0.64, "ets": 0.63, "theta": 0.69, "local_choice": 0.68})
    assert summary["best_local_arm"] == "ets" and summary["diverged"] == []
    assert summary["federated_vs_best_local_mase_improvement"] == round(1 - 0.62 / 0.63, 4)
    text = "\n".join(headline_lines(summary))
    assert "best a branch can do alone (AutoETS)" in text and "better on 7 of 20 branches" in text
    assert "same month last year" in text and "moving average of 3 months" in text


def test_a_diverged_arm_is_flagged_and_never_quoted():
    # at --epsilon 0.3 the same model alone under DP scored MASE 3855: no "+100 %" headline against it
    summary = _summary({"federated": 0.9, "local": 0.7, "local_dp": 3855.0, "seasonal_naive": 0.84,
                        "moving_average_3": 0.76, "mean_12": 0.64, "ets": 0.63, "theta": 0.69, "local_choice": 0.68})
    assert summary["diverged"] == ["local_dp"] and summary["federated_vs_local_dp_mase_improvement"] is None
    assert "diverged, not compared" in "\n".join(headline_lines(summary))
    broken = _summary({"federated": 1000.0, "local": 0.7, "local_dp": 0.8, "seasonal_naive": 0.84,
                       "moving_average_3": 0.76, "mean_12": 0.64, "ets": 0.63, "theta": 0.69, "local_choice": 0.68})
    lines = headline_lines(broken)
    assert "federated model diverged" in lines[0] and broken["federated_vs_best_local_mase_improvement"] is None
    assert not any(line.startswith("federated vs") for line in lines)  # no ratio quoted for a diverged model


def test_the_regional_forecast_reads_whole_in_an_80_column_terminal():
    import io

    from rich.console import Console

    from sovereign.demo import print_forecast

    group = {"nodes": 5, "point": [1234.0] * 6, "low80": [1100.0] * 6, "high80": [1380.0] * 6,
             "low95": [1000.0] * 6, "high95": [1500.0] * 6}
    forecast = {"months_ahead": 6, "alliance": {**group, "nodes": 20},
                "regions": {"Kansai": group, "Seoul Capital": group, "Shanghai": group, "Busan": {"nodes": 0}}}
    out = io.StringIO()
    print_forecast(Console(file=out, width=80), forecast)
    text = out.getvalue()
    assert "…" not in text and text.count("(1,100–1,380)") == 24 and text.count("1,234") == 24
    assert "withheld (too few branches to release): Busan" in text


def test_why_branches_sat_out_is_counted_most_common_first():
    """`--epsilon 40` over a budget of 32: every branch refuses for its budget, one young one
    also for its history; the message led with whichever code sorted first."""
    from coordinator.rounds import RoundReport
    from sovereign.demo import refusal_tally

    rounds = [RoundReport(round=1, contributors=[], refused={"B01": "too-little-history", **{f"B{i:02}": "privacy-budget"
                                                                                           for i in range(2, 20)}}),
              RoundReport(round=2, contributors=[], refused={"B07": "update rejected: norm"})]
    assert refusal_tally(rounds) == "privacy-budget (17 branches), too-little-history (1 branch), update rejected (1 branch)"
