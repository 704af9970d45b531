"""Batch prediction on Ray Data over the vLLM first-token scorer: any log format, one output line
per input row in input order, failed rows reported, metrics when labels exist."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROWS = [
    '"id","search_term","product_title","relevance"',
    '10,"angle bracket","Simpson Strong-Tie 12-Gauge Angle",3',
    '11,"deck stain","Husky 3/8 in. Drive Socket Set",1',
    '12,"l bracket","a row with a missing field"',
    '13,"rain shower head","Delta Vero Shower Faucet Trim Kit in Caf\u00e9",1.67',
    '14,"microwave","Whirlpool Over the Range Microwave",2.33',
]


def test_predict_writes_one_line_per_input_row_with_cumpt_levels(ray_cluster, tiny_model, tmp_path):
    from taosr.config import load_config
    from taosr.models import export_model
    from taosr.decision import DecisionRule
    from taosr.ray_jobs.export import record_rule
    from taosr.ray_jobs.predict import predict

    (tmp_path / "logs.csv").write_bytes("\n".join(ROWS).encode("latin-1"))
    model = export_model(tiny_model, str(tmp_path / "model"))
    rule = DecisionRule("argmax", prior_tau=1.0, level_prior=(0.7, 0.1, 0.1, 0.1))
    record_rule(model, rule, "val")
    config = load_config(
        None,
        [
            "data.encoding=latin-1",
            "data.columns.query=search_term",
            "data.columns.title=product_title",
            "data.columns.label=relevance",
            "data.label_bins={'4': 2.75, '3': 2.25, '2': 1.5, '1': 1.0}",
            "eval.engine=vllm",
            "model.dtype=float32",
            "eval.batch_size=2",
        ],
    )
    result = predict(config, model, str(tmp_path / "logs.csv"), str(tmp_path / "out"))

    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["10", "11", "12", "13", "14"]  # input order, failed rows included
    assert lines[2]["error"].startswith("malformed_csv") and "probs" not in lines[2]
    scored = [line for line in lines if "probs" in line]
    assert [line["label"] for line in scored] == [4, 1, 2, 3]
    for line in scored:
        assert np.isclose(sum(line["probs"]), 1.0) and line["level"] in (1, 2, 3, 4)
    # the exported rule decides, not the argmax: probs are levels 1..4, the rule reads 4..1
    assert [line["level"] for line in scored] == rule.levels([line["probs"][::-1] for line in scored]).tolist()
    assert result["counts"]["scored"] == 4 and result["counts"]["quarantined"] == 1
    assert result["counts"]["level_rule"] == "prior-corrected argmax tau=1"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n"] == 4 and {"macro_f1", "accuracy", "qwk", "spearman", "f1_1"} <= set(metrics)
    assert 0 <= metrics["macro_f1"] <= 100


def test_predict_scores_unlabelled_logs_and_writes_no_metrics(ray_cluster, tiny_model, tmp_path):
    from taosr.config import load_config
    from taosr.ray_jobs.predict import predict

    rows = [{"id": f"u{i}", "query": "phone case", "title": f"case {i}"} for i in range(3)]
    (tmp_path / "logs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = load_config(None, ["eval.engine=hf", "model.dtype=float32"])
    result = predict(config, tiny_model, str(tmp_path / "logs.jsonl"), str(tmp_path / "out"))
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["u0", "u1", "u2"] and all("label" not in line for line in lines)
    assert result["metrics"] is None and not (tmp_path / "out" / "metrics.json").exists()
