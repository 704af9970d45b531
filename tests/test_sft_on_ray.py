"""Stage 1 on the real components: CoT synthesis on Ray Data, SFT with Ray Train + DeepSpeed
ZeRO-2 on two gloo workers, and the saved folder reloaded in transformers and vLLM."""

import copy
import json

import numpy as np
import pytest
import torch

from taosr.formats import Reasoning, ResponseFormat, render
from taosr.losses import masked_token_nll
from taosr.prompts import build_prompt, item_from_row
from taosr.sft_examples import tokenize_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(stage1_run):
    return stage1_run


def _nll(model_path, rows, tokenizer_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    total = 0.0
    with torch.inference_mode():
        for row in rows:
            prompt = build_prompt(tokenizer, row["query"], item_from_row(row))
            response = render(ResponseFormat.POST_COT, row["label"], Reasoning(**json.loads(row["reasoning"])))
            example = tokenize_example(tokenizer, prompt, response, 384)
            logits = model(torch.tensor([example.input_ids])).logits
            total += float(masked_token_nll(logits, torch.tensor([example.labels]))[0])
    return total / len(rows)


def test_cot_synthesis_keeps_every_rule_rationale(trained):
    _, counts, _, run_dir = trained
    assert counts == {"input": 160, "kept": 160, "dropped": 0, "drop_reasons": {}}
    import pyarrow.parquet as pq

    kept = pq.read_table(run_dir / "cot" / "kept").to_pylist()
    assert all(row["teacher"] == "rule" for row in kept)
    # Only rules scored above cot.min_rule_score are retrieved: most rows still get one, a few none.
    with_rule = sum(bool(row["retrieved_rule_ids"]) for row in kept)
    assert len(kept) // 2 < with_rule <= len(kept)


def test_two_worker_deepspeed_sft_lowers_the_loss(trained, tiny_model):
    import pyarrow.parquet as pq

    _, _, summary, run_dir = trained
    rows = [r for r in pq.read_table(run_dir / "cot" / "kept").to_pylist() if r["split"] == "train"][:24]
    before = _nll(tiny_model, rows, tiny_model)
    after = _nll(summary["model"], rows, summary["model"])
    assert after < before - 0.5, (before, after)
    assert summary["step"] > 10
    assert (run_dir / "sft" / "tensorboard").is_dir()
    # Each logged step says where its time went; the parts are timed, so each is positive.
    logged = [json.loads(line) for line in open(run_dir / "sft" / "metrics.jsonl")]
    phases = ("data", "forward", "backward", "update")
    assert all(row[f"{phase}_s"] > 0 for row in logged for phase in phases)
    # The run's totals add up to no more than its training time (validation and saving are the rest).
    totals = [summary[f"total_{phase}_s"] for phase in phases]
    assert 0 < sum(totals) <= summary["train_seconds"], (totals, summary["train_seconds"])


def test_saved_folder_reloads_in_transformers_and_vllm_with_the_same_probabilities(trained):
    from taosr.actors.scorer import LevelScorer
    from taosr.prompts import Item

    _, _, summary, _ = trained
    info = json.loads(open(f"{summary['model']}/taosr-model.json").read())
    assert info["format"] == "post_cot" and info["template_fingerprint"]
    hf = LevelScorer(summary["model"], engine="hf", dtype="float32")
    prompts = hf.prompts_for(
        ["charger for iphone 15", "phone case not pink"],
        [Item("Anker 20W Charger, USB-C"), Item("Spigen Case for iPhone 15, pink")],
    )
    vllm = LevelScorer(summary["model"], engine="vllm", dtype="float32")
    np.testing.assert_allclose(vllm.score_prompts(prompts), hf.score_prompts(prompts), atol=1e-4)


def test_vllm_teacher_actor_runs_and_its_drops_are_counted(ray_cluster, tiny_model, trained):
    import ray

    from taosr.datasets.cot import synthesize

    config, _, _, run_dir = trained
    config = copy.deepcopy(config)  # the stage-1 run is shared by the whole session
    config.cot.teacher, config.cot.teacher_model, config.cot.teacher_dtype = "vllm", tiny_model, "float32"
    config.cot.max_new_tokens = 24
    rows = ray.data.read_parquet(str(run_dir / "data" / "accepted")).limit(6)
    kept, dropped, counts = synthesize(rows, config.cot)
    assert counts["input"] == 6 and counts["kept"] + counts["dropped"] == 6
    # A random tiny model cannot write five valid steps: every row is dropped, with a reason.
    assert counts["drop_reasons"] == {"unparseable": 6}
    assert dropped.count() == 6


def test_two_workers_stop_together_when_patience_runs_out(trained, tiny_model, tmp_path):
    """Patience through the real stage on two gloo workers: with a min_delta no check can beat,
    the first check (step 2) is the best and the second (step 4) runs patience out, so rank 0
    tells both workers to stop there. The saved weights are the better validated of the two steps
    (keep_best needs no min_delta), and the reason is in the summary."""
    import dataclasses

    from taosr.ray_jobs import sft as sft_stage

    config, _, _, _ = trained
    config = dataclasses.replace(
        config,
        sft=dataclasses.replace(
            config.sft, eval_every_steps=2, eval_examples=8, patience=1, min_delta=1.0, checkpoint_every_steps=100
        ),
    )
    summary = sft_stage.train(config, tiny_model, str(tmp_path / "sft"))
    assert summary["step"] == 4 and summary["stopped_early"] == 1
    assert summary["stop_reason"].startswith("patience: 1 validation checks without a gain over step 2's")
    logged = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert max(line["step"] for line in logged) == 4
    scores = {line["step"]: line["val_macro_f1"] for line in logged if "val_macro_f1" in line}
    assert set(scores) == {2, 4}
    assert summary["saved_step"] == (4 if scores[4] > scores[2] else 2)
