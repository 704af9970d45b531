"""The exported model's card, built from a run folder's files (hand-made here)."""

import json

from taosr.model_card import model_card


def write_predictions(run, slug, preds, gold):
    folder = run / "eval" / slug
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": f"r{i}", "label": g, "pred": p}) for i, (g, p) in enumerate(zip(gold, preds))]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_the_card_names_the_model_its_data_its_figures_and_the_rule(tmp_path):
    run = tmp_path
    gold = [1, 2, 3, 4] * 5
    write_predictions(run, "lexical", [4] * 20, gold)  # 5 of 20 right
    write_predictions(run, "sft", gold[:10] + [4] * 10, gold)  # 10 + 3 of 20 right
    write_predictions(run, "srpo", gold, gold)  # all right
    (run / "eval" / "rows.json").write_text(
        json.dumps([["lexical", "lexical baseline"], ["sft", "SFT"], ["srpo", "+ SRPO"]])
    )
    (run / "eval" / "stages.md").write_text("| name | n | macro_f1 |\n|---|---|---|\n| SFT | 20 | 61.00 |\n")
    (run / "data").mkdir()
    (run / "data" / "counts.json").write_text(
        json.dumps({"input": 25, "accepted": 20, "quarantined": 5, "reasons": {"no_label": 5}})
    )
    (run / "data" / "manifest.json").write_text(json.dumps({"output_hash": "abc123"}))
    (run / "srpo").mkdir()
    (run / "srpo" / "summary.json").write_text(
        json.dumps({"genrm": {"model": None, "reason": "the GenRM is not used"}})
    )
    decision = {
        "described": "argmax",
        "split": "val",
        "n": 30,
        "metric": "macro_f1",
        "on_eval_split": {
            "split": "test",
            "n": 20,
            "argmax": {"macro_f1": 1.0, "accuracy": 1.0, "qwk": 1.0},
            "chosen": {"macro_f1": 1.0, "accuracy": 1.0, "qwk": 1.0},
        },
    }
    info = {
        "base_model": "/runs/x/grpo/model",
        "format": "post_cot",
        "prompt_version": "v3",
        "template_fingerprint": "f00d",
    }
    card = model_card(
        run, "srpo", info, decision, "seed: 3\n", base_model="smollm2-135m", source="logs.csv", split="test", seed=3
    )
    assert card.startswith("# taosr relevance model: + SRPO, seed 3\n")
    assert "| base model | `smollm2-135m` |" in card and "| trained from | `/runs/x/grpo/model`" in card
    assert "- Rows: 25 read, 20 accepted, 5 quarantined (no_label 5)" in card and "`abc123`" in card
    assert "| SFT | 20 | 61.00 |" in card  # the eval stage's table, as it wrote it
    # Accuracy 5 -> 20 of 20 right against the lexical line (+75 points), 13 -> 20 against SFT (+35).
    rows = {line.split(" | ")[0]: line for line in card.splitlines() if "(this model)" in line}
    assert set(rows) == {"| lexical baseline → + SRPO (this model)", "| SFT → + SRPO (this model)"}
    assert "| 20 | " in rows["| lexical baseline → + SRPO (this model)"]
    assert (
        "+75.00 [" in rows["| lexical baseline → + SRPO (this model)"]
        and "+35.00 [" in rows["| SFT → + SRPO (this model)"]
    )
    assert rows["| lexical baseline → + SRPO (this model)"].endswith("| yes |")
    assert "**argmax**, chosen on the `val` split (30 rows)" in card
    assert card.count("| argmax | 20 | 100.00 | 100.00 | 1.000 |") == 1  # the kept argmax is one row
    assert "- SRPO's step rewards: the GenRM is not used." in card
    assert card.rstrip().endswith("```yaml\nseed: 3\n```")


def test_a_run_the_eval_stage_has_not_scored_says_so(tmp_path):
    card = model_card(tmp_path, "sft", {}, None, "", base_model="tiny", source="generate", split="test", seed=0)
    assert "The eval stage has not scored this run" in card and "serving uses the plain argmax" in card
