"""The GenRM on the real components: trained by the SFT loop on Ray Train, served by a vLLM Ray
actor that returns P("Yes") per step, and feeding SRPO's hybrid step rewards."""

import copy
import json
import math

import numpy as np
import pytest

from taosr.formats import Reasoning, render

pytestmark = pytest.mark.slow

SHOE = Reasoning(
    "running shoes for women",
    "a Nike running shoe (size 8)",
    "match",
    "a shoe, as asked",
    "partial",
    "the colour is not stated",
    3,
)


@pytest.fixture(scope="module")
def judge(ray_cluster, tiny_model):
    import ray

    from taosr.actors.step_judge import step_judge_actor

    handle = step_judge_actor(tiny_model, num_cpus=0.5, dtype="float32", max_seq_len=1024)
    yield handle
    ray.kill(handle)


def test_the_genrm_actor_returns_one_probability_per_asked_step(judge, tiny_model):
    import ray

    from taosr.actors.step_judge import StepJudge

    lines = SHOE.step_lines()
    requests = [
        {
            "query": "running shoes women",
            "item_text": "Title: Nike Pegasus",
            "step_lines": lines,
            "steps": [1, 2, 3, 4, 5],
        },
        {"query": "desk lamp", "item_text": "Title: IKEA Forsa", "step_lines": lines, "steps": [2, 5]},
    ]
    got = ray.get(judge.step_rewards.remote(requests))
    assert len(got) == 2 and all(len(row) == 5 for row in got)
    assert all(0.0 < p < 1.0 for p in got[0])
    assert [math.isnan(p) for p in got[1]] == [True, False, True, True, False]
    # the same questions through a plain transformers forward: the exact two-way softmax
    reference = StepJudge(tiny_model, engine="hf", dtype="float32")
    expected = reference.yes_probabilities(
        [("running shoes women", "Title: Nike Pegasus", lines[:k]) for k in range(1, 6)]
    )
    np.testing.assert_allclose(got[0], expected, atol=1e-4)


def test_srpo_step_rewards_take_the_verifier_first_and_the_genrm_elsewhere(judge, tiny_model):
    import ray
    from transformers import AutoTokenizer

    from taosr.actors.rollout import Rollout
    from taosr.config import SrpoConfig
    from taosr.training.rl import step_reward_inputs
    from taosr.verifier import OfflineVerifier

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    def rollout(text):
        ids = tokenizer.encode(text, add_special_tokens=False)
        return Rollout(0, text, ids, [0.0] * len(ids), "stop")

    well_formed = render("post_cot", 3, SHOE)
    annotated = {"query": "running shoes women", "item_text": "Title: Nike Pegasus", "annotation_key": "annotated"}
    unannotated = {"query": "desk lamp", "item_text": "Title: IKEA Forsa", "annotation_key": "other"}
    groups = [
        {"prompt": annotated, "rollouts": [rollout(well_formed), rollout("3\nno steps here")]},
        {"prompt": unannotated, "rollouts": [rollout(well_formed), rollout(well_formed)]},
    ]
    truth = {"category_verdict": "match", "attribute_verdict": "match", "decision": 3}  # step 4 is wrong
    context = {"tokenizer": tokenizer, "genrm": judge, "verifier": OfflineVerifier({"annotated": truth})}
    rl = SrpoConfig(lam=0.5, critical_weight=2.0, genrm_timeout_s=120.0)
    extras, metrics = step_reward_inputs(rl, groups, context)
    rewards = extras["step_rewards"]
    assert rewards.shape == (2, 2, 5)
    genrm, other = ray.get(
        judge.step_rewards.remote(
            [
                {**prompt, "step_lines": SHOE.step_lines(), "steps": [1, 2, 3, 4, 5]}
                for prompt in (annotated, unannotated)
            ]
        )
    )
    # annotated prompt, well formed: GenRM on steps 1-2, the verifier's 1/0 on steps 3-5
    np.testing.assert_allclose(rewards[0, 0].tolist(), genrm[:2] + [1.0, 0.0, 1.0], atol=1e-5)
    assert all(math.isnan(v) for v in rewards[0, 1].tolist())  # unparseable: outcome reward only
    np.testing.assert_allclose(rewards[1, 1].tolist(), other, atol=1e-5)  # GenRM on every step
    assert metrics["step_reward_from_verifier"] == pytest.approx(3 / 20)
    assert metrics["step_reward_from_genrm"] == pytest.approx(12 / 20)
    assert metrics["step_reward_from_none"] == pytest.approx(5 / 20)
    assert metrics["genrm_questions"] == 12 and extras["step_spans"][1] is None


def test_genrm_stage_trains_on_annotated_steps_and_reports_held_out_step_accuracy(stage1_run, tiny_model, tmp_path):
    from taosr.ray_jobs import genrm

    config, _, _, _ = stage1_run
    config = copy.deepcopy(config)
    config.model.dtype = "float32"
    for key, value in dict(
        max_examples=32,
        micro_batch_size=4,
        num_workers=1,
        cpus_per_worker=1,
        bf16=False,
        lr=3e-3,
        max_seq_len=768,
        eval_split="test",
        eval_rows=6,
    ).items():
        setattr(config.genrm, key, value)
    summary = genrm.train(config, tiny_model, str(tmp_path / "genrm"))
    assert summary["examples"] + summary["too_long"] == 32 and summary["examples"] > 24
    assert summary["yes_share"] == 0.5
    assert summary["train_rows"]["annotated"] > 16 and summary["held_out_rows"]["annotated"] == 6
    for key in ("step_accuracy", "base_step_accuracy"):
        accuracy = summary[key]
        assert accuracy["n"] > 6 * 5  # every judged step of 6 rows, correct and corrupted
        assert set(accuracy["per_step"]) == {"1", "2", "3", "4", "5"}
        assert accuracy["accuracy"] == pytest.approx(
            (accuracy["correct_steps"] + accuracy["corrupted_steps"]) / 2, abs=0.05
        )
    gain = summary["gain_over_base"]  # the two judges on the same questions, paired by response
    assert gain["n"] == summary["step_accuracy"]["n"] and gain["clusters"] == 6
    assert gain["accuracy_a"] == summary["base_step_accuracy"]["accuracy"]
    assert gain["delta"] == pytest.approx(summary["step_accuracy"]["accuracy"] - gain["accuracy_a"])
    assert gain["low"] <= gain["delta"] <= gain["high"] and gain["beats_base"] == (gain["low"] > 0)
    info = json.loads((tmp_path / "genrm" / "model" / "taosr-model.json").read_text())
    assert info["stage"] == "genrm" and info["format"] == "genrm"
    logged = [json.loads(line) for line in open(tmp_path / "genrm" / "metrics.jsonl")]
    assert logged and all(math.isfinite(row["loss"]) for row in logged)


@pytest.mark.timeout(900)
def test_a_sigkilled_genrm_job_resumes_from_its_checkpoint_when_run_again(stage1_run, ray_cluster, tmp_path):
    """The GenRM's job killed (SIGKILL to its process group) once a checkpoint is registered; the
    same command again builds its step questions, resumes training and logs every step once."""
    import os

    from tests.conftest import MODEL_CACHE, assert_supervised_stage_resumed, kill_and_rerun

    config, _, _, run_dir = stage1_run
    config = copy.deepcopy(config)
    for stage in ("data", "cot"):  # the run's upstream, shared read-only
        os.symlink(run_dir / stage, tmp_path / stage)
    config.run_dir, config.model.cache_dir, config.model.dtype = str(tmp_path), MODEL_CACHE, "float32"
    for key, value in dict(
        max_examples=32,
        micro_batch_size=4,
        num_workers=1,
        cpus_per_worker=1,
        bf16=False,
        epochs=2,
        lr=3e-3,
        max_seq_len=768,
        eval_split="test",
        eval_rows=2,
        log_every_steps=1,
        checkpoint_every_steps=4,
    ).items():
        setattr(config.genrm, key, value)
    output = kill_and_rerun("genrm", config, ray_cluster, tmp_path, config.genrm.cpus_per_worker)
    summary = assert_supervised_stage_resumed("genrm", output, tmp_path, every=4)
    assert summary["step_accuracy"]["n"] > 0  # the resumed model was judged on held-out steps
