"""The step-reward ablation's own logic: each variant trains SRPO with its one change and nothing
else, from SRPO's own start model, and the table puts every variant next to the pipeline's GRPO and
SRPO rows. SRPO's training and the eval stage it calls are tested on Ray elsewhere; here they are
recorders that score a fixed set of predictions."""

import json

import pytest

from taosr.config import load_config, to_dict
from taosr.metrics import evaluate_records
from taosr.ray_jobs import ablate_step_rewards as ablation

GOLD = [1, 2, 3, 4] * 3


def scored(preds, query_type="exact"):
    return evaluate_records([{"gold": g, "pred": p, "query_type": query_type} for g, p in zip(GOLD, preds)])


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """Runs the ablation's main() with SRPO's training and the evaluation replaced by recorders."""
    trained = []
    monkeypatch.setattr(ablation, "init_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(ablation.srpo, "start_model_for", lambda config: f"{config.run_dir}/grpo/model")

    def train(config, start, out):
        trained.append({"srpo": to_dict(config)["srpo"], "start": start, "out": out})
        return {"model": f"{out}/model"}

    outcomes = {"srpo-no-verifier": [1, 2, 3, 3] * 3, "srpo-no-genrm": [1, 1, 3, 4] * 3}
    monkeypatch.setattr(ablation.srpo, "train", train)
    monkeypatch.setattr(ablation.eval_stage, "evaluate_model", lambda config, name, model, out: scored(outcomes[name]))
    for stage, preds in (("grpo", GOLD), ("srpo", [2, 2, 3, 4] * 3)):
        (tmp_path / "eval" / stage).mkdir(parents=True)
        (tmp_path / "eval" / stage / "metrics.json").write_text(json.dumps(scored(preds)))
    return tmp_path, trained


def test_each_variant_changes_one_srpo_setting_from_the_same_start(recorded):
    run_dir, trained = recorded
    assert (
        ablation.main(["--config", "configs/tiny.yaml", f"run_dir={run_dir}", "--variants", "no-verifier,no-genrm"])
        == 0
    )
    base = to_dict(load_config("configs/tiny.yaml", [f"run_dir={run_dir}"]))["srpo"]
    assert [t["out"] for t in trained] == [f"{run_dir}/ablation/srpo-no-verifier", f"{run_dir}/ablation/srpo-no-genrm"]
    assert {t["start"] for t in trained} == {f"{run_dir}/grpo/model"}
    changed = [{key for key in base if t["srpo"][key] != base[key]} for t in trained]
    assert changed == [{"verifier_coverage"}, {"genrm"}]
    assert trained[0]["srpo"]["verifier_coverage"] == 0.0 and trained[1]["srpo"]["genrm"] == "none"


def test_the_table_puts_the_variants_next_to_the_pipelines_grpo_and_srpo(recorded):
    run_dir, _ = recorded
    ablation.main(["--config", "configs/tiny.yaml", f"run_dir={run_dir}", "--variants", "no-verifier,no-genrm"])
    table = (run_dir / "ablation" / "srpo_step_rewards.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    # Macro-F1 by hand: all right 100; [1,2,3,3] -> F1 (1, 1, 0.667, 0) = 66.67; [1,1,3,4] -> F1
    # (0.667, 0, 1, 1) = 66.67; [2,2,3,4] -> F1 (0, 0.667, 1, 1) = 66.67.
    assert set(rows) >= {
        "GRPO",
        "SRPO (verifier + GenRM)",
        "SRPO, GenRM only (no verifier)",
        "SRPO, verifier only (no GenRM)",
    }
    assert "| 100.00 |" in rows["GRPO"]
    assert "| 66.67 |" in rows["SRPO, GenRM only (no verifier)"]
    assert "| exact | 12 |" in table  # the by-query-type table covers every row


def test_an_unknown_variant_is_refused_before_anything_runs(recorded, capsys):
    run_dir, trained = recorded
    with pytest.raises(SystemExit):
        ablation.main(["--config", "configs/tiny.yaml", f"run_dir={run_dir}", "--variants", "no-verifer"])
    assert "unknown variants ['no-verifer']" in capsys.readouterr().err and not trained
