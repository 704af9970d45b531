"""The run report from a constructed run directory: tables with the right numbers, plots
written, missing parts named."""

import json

import pytest

from taosr.report import build_report, pass_at_k_table, stage_comparisons, stage_rows, stage_table


def metrics(f1_4, acc, confusion_4_4):
    overall = {
        "n": 10,
        "f1_1": 0.0,
        "f1_2": 0.5,
        "f1_3": None,
        "f1_4": f1_4,
        "macro_f1": (0.5 + f1_4) / 3,
        "accuracy": acc,
        "good_f1": 0.8,
        "qwk": 0.5,
        "spearman": None,
        "hallucination_rate": 0.25,
        "format_error_rate": 0.0,
        "first_token_pass_at_k": {"pass@1": acc, "pass@2": acc + 0.1},
    }
    return {
        "split": "test",
        "overall": overall,
        "by_query_type": {"negation": {**overall, "n": 4}, "plain": {**overall, "n": 6, "macro_f1": 0.1}},
        "confusion": {"4": {"4": confusion_4_4, "2": 1}, "2": {"2": 3}, "1": {"4": 2}},
    }


@pytest.fixture
def run(tmp_path):
    for slug, f1 in (("base", 0.1), ("sft", 0.6), ("dpo", 0.7)):
        folder = tmp_path / "eval" / slug
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics(f1, f1 + 0.05, 4)))
        # 10 shared examples: the untrained model says 1 for all, SFT and DPO are always right
        gold = [4] * 5 + [2] * 5
        rows = [{"id": f"x{i}", "label": g, "pred": 1 if slug == "base" else g} for i, g in enumerate(gold)]
        (folder / "predictions.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    # the rows and titles the eval stage scored, from the stage registry
    (tmp_path / "eval" / "rows.json").write_text(json.dumps([["base", "untrained"], ["sft", "SFT"], ["dpo", "+ DPO"]]))
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "pass_at_k.json").write_text(
        json.dumps(
            {
                "prompts": 12,
                "overall": {"pass@1": 0.4, "pass@2": 0.6},
                "by_query_type": {"plain": {"prompts": 12, "pass@1": 0.4, "pass@2": 0.6}},
            }
        )
    )
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 3 - s / 10}) for s in range(1, 6))
    )
    (tmp_path / "sft" / "manifest.json").write_text(json.dumps({"seconds": 61.2, "finished_at": 1.8e9}))
    return tmp_path


def add_sweep(run):
    (run / "export" / "beta").mkdir(parents=True)
    sweep = [
        {"beta": b, "macro_f1": 0.3 + b / 10, "accuracy": 0.5, "good_f1": 0.6, "tier_accuracy": 0.7 - b / 10}
        for b in (0.25, 0.5, 0.75)
    ]
    (run / "export" / "beta" / "cumpt_sweep.json").write_text(
        json.dumps({"metric": "macro_f1", "best_beta": 0.75, "sweep": sweep})
    )


def add_genrm(run):
    (run / "genrm").mkdir()
    accuracy = {
        "n": 20,
        "accuracy": 0.75,
        "correct_steps": 0.9,
        "corrupted_steps": 0.6,
        "yes_rate": 0.65,
        "per_step": {"1": 1.0, "3": 0.5},
    }
    (run / "genrm" / "summary.json").write_text(
        json.dumps(
            {
                "examples": 40,
                "yes_share": 0.5,
                "step_accuracy": accuracy,
                "base_step_accuracy": {**accuracy, "accuracy": 0.5, "per_step": {"1": 0.5}},
            }
        )
    )


def test_report_tables_and_plots(run):
    result = build_report(str(run))
    text = (run / "report" / "report.md").read_text()
    assert "| SFT | 10 | 0.00 | 50.00 | – | 60.00 | 36.67 | 65.00 | 80.00 | 0.500 | – | 25.00 | 0.00 |" in text
    assert "| negation | 4 | 20.00 | 36.67 | 40.00 |" in text  # macro-F1 by query type, one column per stage
    assert "| all | 12 | 40.00 | 60.00 |" in text
    assert "| sft | 61 |" in text
    assert "| model | pass@1 | pass@2 |" in text and "| SFT | 65.00 | 75.00 |" in text
    # a constant answer has QWK 0, a perfect one 1
    assert (
        "| untrained → SFT | 10 | +100.00 [+100.00, +100.00] | +100.00 [+100.00, +100.00] | +1.000 [+1.000, +1.000] "
        "| 10 (10 / 0) | 0.002 | yes | 1.0 min |" in text
    )
    assert (
        "| SFT → + DPO | 10 | +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] | +0.000 [+0.000, +0.000] | 0 (0 / 0) | "
        "1.000 | no | – |" in text
    )
    assert {p.split("/")[-1] for p in result["plots"]} == {"confusion.png", "curves-sft.png", "pass_at_k.png"}
    for plot in result["plots"]:
        assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "<table>" in (run / "report" / "report.html").read_text()
    assert result["missing"] == [
        "GenRM step accuracy (no genrm/summary.json)",
        "CumPT sweep (no export/beta/cumpt_sweep.json)",
    ]


def test_report_shows_the_cumpt_choice_and_the_genrm(run):
    add_sweep(run)
    candidates = [
        {"rule": "CumPT beta=0.75", "macro_f1": 0.375},
        {"rule": "prior-corrected argmax tau=0.3", "macro_f1": 0.5},
    ]
    metrics = {
        "argmax": {"macro_f1": 0.25, "accuracy": 0.5, "qwk": 0.1},
        "chosen": {"macro_f1": 0.4, "accuracy": 0.45, "qwk": 0.2},
    }
    (run / "export" / "decision.json").write_text(
        json.dumps(
            {
                "metric": "macro_f1",
                "split": "val",
                "n": 20,
                "described": "prior-corrected argmax tau=0.3",
                "candidates": candidates,
                "on_eval_split": {"split": "test", "n": 10, **metrics},
            }
        )
    )
    add_genrm(run)
    result = build_report(str(run))
    text = (run / "report" / "report.md").read_text()
    assert "| GenRM | 20 | 75.00 | 90.00 | 60.00 | 65.00 | 100.00 | 50.00 |" in text
    assert "| base (untrained) | 20 | 50.00 | 90.00 | 60.00 | 65.00 | 50.00 | – |" in text
    assert "Chosen beta 0.75 (maximises macro_f1: 37.50; tier accuracy 62.50)" in text
    assert "for macro_f1: **prior-corrected argmax tau=0.3** (50.00)" in text
    assert "| argmax | 10 | 25.00 | 50.00 | 0.100 |" in text
    assert "| prior-corrected argmax tau=0.3 | 10 | 40.00 | 45.00 | 0.200 |" in text
    assert str(run / "report" / "cumpt_sweep.png") in result["plots"] and result["missing"] == []


def test_a_run_from_before_rows_json_shows_its_rows_in_the_order_the_stages_ran(run):
    (run / "eval" / "rows.json").unlink()
    (run / "dpo").mkdir()
    (run / "dpo" / "manifest.json").write_text(json.dumps({"seconds": 30.0, "finished_at": 1.8e9 + 100}))
    assert stage_rows(run) == {"base": "base", "sft": "sft", "dpo": "dpo"}
    build_report(str(run))
    text = (run / "report" / "report.md").read_text()
    assert "| sft → dpo | 10 |" in text
    assert text.index("| sft | 61 |") < text.index("| dpo | 30 |")  # timings in the order the stages started


def test_report_needs_an_evaluation(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval stage"):
        build_report(str(tmp_path))


def test_each_stage_is_compared_with_the_one_before_and_the_last_with_sft():
    assert stage_comparisons(["base", "sft", "dpo", "grpo"]) == [
        ("base", "sft"),
        ("sft", "dpo"),
        ("dpo", "grpo"),
        ("sft", "grpo"),
    ]
    assert stage_comparisons(["lexical", "base", "sft", "dpo"]) == [
        ("base", "sft"),
        ("sft", "dpo"),
        ("lexical", "sft"),
        ("lexical", "dpo"),
    ]
    assert stage_comparisons(["base", "sft", "dpo"]) == [("base", "sft"), ("sft", "dpo")]
    assert stage_comparisons(["base", "sft"]) == [("base", "sft")]


def test_tables_leave_absent_values_blank():
    assert "| untrained | 0 | – |" in stage_table({"base": {"title": "untrained", "overall": {}}})
    assert pass_at_k_table({"overall": {"pass@1": 0.5}}).splitlines()[-1] == "| all |  | 50.00 |"


@pytest.mark.slow
def test_a_run_on_s3_gets_its_report_on_s3(run, s3_endpoint, tmp_path_factory):
    import boto3

    from taosr.datasets.storage import copy_tree, exists, read_text
    from taosr.ray_jobs.pipeline import write_report

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="runs")
    copy_tree(str(run), "s3://runs/r1", s3_endpoint)
    html = write_report("s3://runs/r1", s3_endpoint)
    assert html == "s3://runs/r1/report/report.html" and exists(html, s3_endpoint)
    local = build_report(str(run), str(tmp_path_factory.mktemp("local-report")), title="s3://runs/r1")
    # The same tables from the S3 copy as from the local run.
    assert read_text("s3://runs/r1/report/report.md", s3_endpoint) == open(local["markdown"]).read()


def test_the_decision_section_shows_the_chosen_rule_beside_the_argmax_and_the_argmax_once():
    from taosr.report import decision_section

    scores = {"n": 10, "macro_f1": 0.5, "accuracy": 0.6, "qwk": 0.4}
    decision = {
        "split": "val",
        "n": 30,
        "metric": "macro_f1",
        "described": "cumpt beta=0.35",
        "candidates": [{"rule": "argmax", "macro_f1": 0.45}, {"rule": "cumpt beta=0.35", "macro_f1": 0.52}],
        "on_eval_split": {"split": "test", "n": 10, "argmax": scores, "chosen": {**scores, "macro_f1": 0.55}},
    }
    text = decision_section(decision)
    assert "**cumpt beta=0.35** (52.00)" in text
    assert "| argmax | 10 | 50.00 |" in text and "| cumpt beta=0.35 | 10 | 55.00 |" in text

    kept = {**decision, "described": "argmax", "on_eval_split": {**decision["on_eval_split"], "chosen": scores}}
    rows = [line for line in decision_section(kept).splitlines() if line.startswith("| argmax")]
    assert rows == ["| argmax (chosen) | 10 | 50.00 | 60.00 | 0.400 |"]


def test_the_sft_validation_curve_and_its_stop_reason(tmp_path):
    from taosr.report import validation_section

    (tmp_path / "sft").mkdir()
    checks = [
        {"step": 50, "val_macro_f1": 0.25, "val_qwk": 0.1, "val_predicted_levels": {"2": 100, "4": 28}},
        {"step": 100, "val_macro_f1": 0.5, "val_qwk": 0.4, "val_predicted_levels": {"1": 9, "2": 40, "3": 11, "4": 68}},
        {"step": 110, "loss": 1.0},
    ]
    (tmp_path / "sft" / "metrics.jsonl").write_text("\n".join(json.dumps(c) for c in checks))
    (tmp_path / "sft" / "summary.json").write_text(
        json.dumps({"saved_step": 100, "stop_reason": "time cap: 30.1 of 30.0 minutes"})
    )
    section = validation_section(tmp_path, "sft")
    assert "| 50 | 25.00 | 0.100 | 0/100/0/28 |" in section and "| 100 | 50.00 | 0.400 | 9/40/11/68 |" in section
    assert section.count("\n|") == 3  # header rule and the two checks, not the plain step
    assert "Kept step 100; stopped by time cap: 30.1 of 30.0 minutes." in section
    assert validation_section(tmp_path, "dpo") == ""


def test_the_genrm_verdict_says_whether_srpo_scored_steps_with_it(tmp_path):
    from taosr.report import genrm_verdict

    gain = {
        "n": 400,
        "clusters": 40,
        "accuracy_a": 0.555,
        "accuracy_b": 0.5475,
        "delta": -0.0075,
        "low": -0.06,
        "high": 0.045,
        "beyond_noise": False,
        "beats_base": False,
    }
    srpo = {"genrm": {"model": None, "reason": "the GenRM is not used: held-out step accuracy 54.8% ..."}}
    text = genrm_verdict({"gain_over_base": gain}, srpo)
    assert "Gain over the untrained base: -0.8 points of step accuracy [-6.0, +4.5]" in text
    assert "over 40 held-out responses, 400 questions): within noise." in text
    assert "SRPO's step rewards: the GenRM is not used: held-out step accuracy 54.8% ...." in text
    assert genrm_verdict({}, None) == ""


def test_the_rl_stages_validation_appears_per_stage_in_curriculum_order(tmp_path):
    from taosr.report import validated_stages, validation_section

    for stage in ("grpo", "srpo/stage-hard", "srpo/stage-easy"):
        (tmp_path / stage).mkdir(parents=True)
        checks = [
            {"step": 0, "val_macro_f1": 0.5, "val_qwk": 0.3, "val_predicted_levels": {"1": 3}},
            {"step": 1, "val_macro_f1": 0.4, "val_qwk": 0.2, "val_predicted_levels": {"1": 3}},
        ]
        (tmp_path / stage / "metrics.jsonl").write_text("\n".join(json.dumps(c) for c in checks))
        (tmp_path / stage / "summary.json").write_text(
            json.dumps({"saved_step": 0, "step": 1, "stop_reason": "step budget: 1 of 1 steps"})
        )
    (tmp_path / "srpo" / "summary.json").write_text(json.dumps({"curriculum": {"easy": {}, "hard": {}}}))
    assert validated_stages(tmp_path) == ["sft", "grpo", "srpo/stage-easy", "srpo/stage-hard"]
    section = validation_section(tmp_path, "srpo/stage-easy")
    assert (
        "| 0 | 50.00 | 0.300 | 3/0/0/0 |" in section and "Kept step 0; stopped by step budget: 1 of 1 steps." in section
    )
