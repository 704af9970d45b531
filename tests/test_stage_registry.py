"""The stage registry: one list that the pipeline, the eval stage's inputs, the policy lookup and
stage selection all read; a stage added from outside runs through the real pipeline loop
(manifests, skip, rerun downstream). Plain files, no Ray: the toy stages start nothing."""

import json

import pytest

from taosr.config import load_config
from taosr.datasets.storage import join, write_text
from taosr.stages import registry
from taosr.stages.registry import StageSpec


@pytest.fixture
def toy_stages():
    """Two toy stages: ``toy`` reads the data stage and writes a file whose text a test can
    change; ``toy_policy`` reads ``toy`` and trains a (pretend) policy."""
    calls = []
    content = {"text": "one"}

    def toy(config):
        calls.append("toy")
        write_text(join(config.run_dir, "toy", "out.txt"), content["text"])
        return {"wrote": content["text"]}

    def toy_policy(config):
        calls.append("toy_policy")
        write_text(join(config.run_dir, "toy_policy", "model", "config.json"), "{}")
        return {"model": join(config.run_dir, "toy_policy", "model")}

    registry.register(StageSpec("toy", inputs=("data",), run=toy))
    registry.register(StageSpec("toy_policy", ("sft",), ("toy",), run=toy_policy, policy_title="+ toy"))
    try:
        yield calls, content
    finally:
        registry.unregister("toy")
        registry.unregister("toy_policy")


def test_the_builtin_stages_in_pipeline_order():
    assert registry.stage_names() == (
        "data",
        "cot",
        "sft",
        "sample",
        "dpo",
        "grpo",
        "genrm",
        "srpo",
        "eval",
        "export",
        "serve",
    )
    assert registry.policy_stages() == {"sft": "SFT", "dpo": "+ DPO", "grpo": "+ GRPO", "srpo": "+ SRPO (TaoSR-SHE)"}
    assert registry.policy_stages_before("srpo") == ("sft", "dpo", "grpo")
    # eval and export read every trained policy; a stage's own inputs come first
    assert registry.get("eval").inputs == ("data", "sft", "dpo", "grpo", "srpo")


def test_a_registered_stage_runs_after_what_it_reads_and_joins_every_list(toy_stages):
    from taosr.ray_jobs.pipeline import selected_stages

    names = registry.stage_names()
    assert names.index("toy") == names.index("data") + 1
    assert names.index("toy_policy") == names.index("toy") + 1
    assert "toy_policy" in registry.policy_stages()
    assert "toy_policy" in registry.get("eval").inputs and "toy_policy" in registry.get("export").inputs
    assert selected_stages("toy_policy,toy", "") == ["toy", "toy_policy"]


def test_a_registered_stage_goes_through_the_pipeline_loop(toy_stages, tmp_path):
    from taosr.ray_jobs.pipeline import run_pipeline

    calls, content = toy_stages
    config = load_config(None, [f"run_dir={tmp_path}"])
    record = run_pipeline(config, ["toy", "toy_policy"])
    assert [record[s]["action"] for s in ("toy", "toy_policy")] == ["fresh", "fresh"]
    manifest = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert manifest["metrics"] == {"wrote": "one"}
    # up to date: nothing runs
    record = run_pipeline(config, ["toy", "toy_policy"])
    assert [record[s]["action"] for s in ("toy", "toy_policy")] == ["skip", "skip"] and calls == ["toy", "toy_policy"]
    # forcing toy to write other bytes makes the stage that read it run again
    content["text"] = "two"
    record = run_pipeline(config, ["toy", "toy_policy"], force={"toy"})
    assert [record[s]["action"] for s in ("toy", "toy_policy")] == ["fresh", "fresh"]
    # a config section the stage reads changes: it reruns; one it does not read changes nothing
    config.sft.lr *= 2
    record = run_pipeline(config, ["toy", "toy_policy"])
    assert [record[s]["action"] for s in ("toy", "toy_policy")] == ["skip", "fresh"]


def test_registration_refuses_what_the_pipeline_could_not_run(toy_stages):
    with pytest.raises(ValueError, match="already registered"):
        registry.register(StageSpec("sft", run=lambda config: {}))
    with pytest.raises(ValueError, match="unknown stages"):
        registry.register(StageSpec("orphan", inputs=("nowhere",), run=lambda config: {}))
    with pytest.raises(ValueError, match="no run"):
        registry.register(StageSpec("idle"))


def test_the_plan_reruns_what_reads_a_rerun_stage_and_runs_nothing(tmp_path, monkeypatch):
    from taosr.config import load_config
    from taosr.ray_jobs import pipeline
    from taosr.stages import manifest

    config = load_config("configs/tiny.yaml", [f"run_dir={tmp_path}"])
    stages = pipeline.selected_stages("data,cot,sft,sample,eval", "")
    assert [row["action"] for row in pipeline.plan(config, stages)] == ["fresh"] * 5  # an empty run_dir
    assert {row["reason"] for row in pipeline.plan(config, stages)} == {"no manifest"}

    def decide(run_dir, spec, config_dict, endpoint="", force=False):  # every manifest matches but SFT's
        if spec.name == "sft":
            return manifest.Decision("fresh", "config changed", {})
        return manifest.Decision("skip", "manifest matches", {})

    monkeypatch.setattr(manifest, "decide", decide)
    rows = {row["stage"]: row for row in pipeline.plan(config, stages)}
    assert rows["data"]["action"] == rows["cot"]["action"] == "skip"
    assert rows["sample"] == {"stage": "sample", "action": "fresh", "reason": "sft reruns first"}
    assert rows["eval"]["action"] == "fresh" and "sft" in rows["eval"]["reason"]  # eval reads every policy
    assert not (tmp_path / "data").exists()  # nothing ran


def test_a_run_ends_with_its_stages_times_figures_and_report(tmp_path):
    import json

    from taosr.ray_jobs.pipeline import run_summary

    (tmp_path / "eval" / "sft").mkdir(parents=True)
    (tmp_path / "eval" / "rows.json").write_text(json.dumps([["lexical", "lexical baseline"], ["sft", "SFT"]]))
    (tmp_path / "eval" / "sft" / "metrics.json").write_text(json.dumps({"overall": {"macro_f1": 0.5209, "qwk": 0.523}}))
    record = {"data": {"action": "skip", "seconds": 0.0}, "sft": {"action": "fresh", "seconds": 90.0}}
    lines = run_summary(str(tmp_path), record, "runs/x/report/report.html").splitlines()
    assert "sft      fresh        1.5" in lines and "total                 1.5" in lines
    assert any(line.startswith("SFT") and line.split()[1:] == ["52.09", "0.523"] for line in lines)
    assert not any(line.startswith("lexical baseline ") for line in lines)  # not scored: no row
    assert lines[-1] == "report: runs/x/report/report.html"
