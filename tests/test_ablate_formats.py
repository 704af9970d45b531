"""The format ablation's own logic: its difference rows (hand-checked), its table, and which SFT
runs it reuses instead of training again. The training and scoring it calls are the SFT and eval
stages, tested on Ray elsewhere."""

import copy
import json

from taosr.config import load_config, to_dict, to_yaml
from taosr.stages import manifest as manifests
from taosr.ray_jobs.ablate_formats import earlier_ablation, pipeline_sft, render
from taosr.stages.registry import get as stage_spec
from taosr.differences import difference_row

GOLD = [1, 2, 3, 4] * 5


def by_id(preds):
    return {f"r{i}": (g, p) for i, (g, p) in enumerate(zip(GOLD, preds))}


def test_difference_row_by_hand():
    # Before: level 1 for every row -> F1_1 = 2 * 0.25 * 1 / 1.25 = 0.4, macro-F1 0.1, accuracy
    # 0.25, QWK 0 (a constant prediction agrees with gold no better than chance). After: all right.
    row = difference_row("const → perfect", by_id([1] * 20), by_id(GOLD))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "const → perfect" and cells[1] == "20"
    assert cells[2].startswith("+90.00 [") and cells[3].startswith("+75.00 [") and cells[4].startswith("+1.000 [")
    assert cells[5] == "15 (15 / 0)"  # the 15 rows whose gold is not 1 changed, each to the right level
    assert cells[6] == "< 0.001"  # 2 / 2**15 = 0.00006
    assert cells[7] == "yes"
    # Only the ids both models scored are compared.
    assert "| 12 |" in difference_row("x", by_id([1] * 20), {k: v for k, v in list(by_id(GOLD).items())[:12]})


def test_a_change_within_noise_is_called_so():
    one_flip = list(GOLD)
    one_flip[0] = 2
    assert difference_row("x", by_id(GOLD), by_id(one_flip)).endswith("| 1 (0 / 1) | 1.000 | no |")
    # Rows 1 and 2 go from right to wrong, row 3 from wrong (1 for a 4) to right.
    before, after = list(GOLD), list(GOLD)
    before[3] = 1
    after[1], after[2] = 1, 4
    assert "| 3 (1 / 2) | 1.000 |" in difference_row("x", by_id(before), by_id(after))


def test_the_sign_test_by_hand():
    from taosr.metrics import sign_test

    assert sign_test(5, 0) == 0.0625  # 2 * (1/2)**5: five rows all one way convince nobody
    assert sign_test(0, 6) == 0.03125  # 2 * (1/2)**6
    assert abs(sign_test(8, 2) - 112 / 1024) < 1e-12  # 2 * (1 + 10 + 45) / 2**10
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0


def test_render_compares_each_format_with_the_configured_one_and_the_baseline():
    predictions = {"lexical": by_id([1] * 20), "label_only": by_id([1, 2, 3, 3] * 5), "post_cot": by_id(GOLD)}
    trained = {
        "label_only": {"examples": 3200, "source": "trained now", "train_seconds": 600.0},
        "post_cot": {"examples": 3200, "source": "the pipeline's sft stage", "train_seconds": 1093.2},
    }
    row = {"n": 20, "macro_f1": 0.5, "accuracy": 0.5, "qwk": 0.1}
    table = {"lexical baseline (TF-IDF + LR)": row, "SFT label_only (3200 ex)": row, "SFT post_cot (3200 ex)": row}
    text = render(table, trained, predictions, "post_cot", seed=0)
    assert "| label_only | 3200 | trained now | 10.0 |" in text
    assert "| post_cot | 3200 | the pipeline's sft stage | 18.2 |" in text
    for change in ("label_only → post_cot", "lexical → label_only", "lexical → post_cot"):
        assert f"| {change} | 20 |" in text
    assert "post_cot → post_cot" not in text


def test_an_earlier_run_is_reused_only_with_the_same_config(tmp_path):
    config = load_config("configs/tiny.yaml", [f"run_dir={tmp_path}"])
    config.sft.format = "label_only"
    folder = tmp_path / "ablation" / "label_only"
    assert earlier_ablation(str(folder), config) is None  # nothing trained yet
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"examples": 3200, "train_seconds": 600.0}))
    (folder / "config.yaml").write_text(to_yaml(config))
    reused = earlier_ablation(str(folder), config)
    assert reused["model"] == str(folder / "model") and reused["examples"] == 3200
    changed = copy.deepcopy(config)
    changed.sft.lr = 1e-4
    assert earlier_ablation(str(folder), changed) is None


def test_the_pipelines_sft_is_reused_only_when_its_manifest_matches(tmp_path):
    config = load_config("configs/tiny.yaml", [f"run_dir={tmp_path}"])
    assert pipeline_sft(config) is None  # the pipeline never ran here
    spec = stage_spec("sft")
    expected = manifests.decide(str(tmp_path), spec, to_dict(config)).expected
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "summary.json").write_text(json.dumps({"examples": 3200, "train_seconds": 1093.2}))
    (tmp_path / "sft" / "manifest.json").write_text(json.dumps(expected))
    assert pipeline_sft(config)["model"] == str(tmp_path / "sft" / "model")
    changed = copy.deepcopy(config)
    changed.sft.decision_weight = 0.9
    assert pipeline_sft(changed) is None
