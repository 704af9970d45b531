"""Stage 3 on the real components: rollout actors on vLLM, a two-rank DeepSpeed learner on Ray
Train, weight sync verified every step, checkpoints and resume."""

import copy
import json
import math

import pytest

from taosr.training import rl_stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learnable(stage1_run, tiny_model, tmp_path_factory):
    """A reward the tiny model can learn in a few steps: a label-only SFT of the tiny model
    answers with roughly the training label mix, and RL prompts whose gold label is always 4
    reward moving the rest of the probability to '4' (scored on the first-token label alone)."""
    from taosr.ray_jobs import data as data_stage
    from taosr.ray_jobs import sft as sft_stage

    config, _, _, stage1_dir = stage1_run
    config = copy.deepcopy(config)
    config.sft.format, config.sft.epochs, config.sft.max_seq_len = "label_only", 5, 384
    # One SFT worker: Ray Data hands two workers' shards out in the order they ask, so the start
    # model (and whether a near-threshold RL test learns from it) would change from run to run.
    config.sft.num_workers, config.sft.cpus_per_worker = 1, 2
    start = sft_stage.train(config, tiny_model, str(tmp_path_factory.mktemp("label-only") / "sft"))["model"]
    config.run_dir = str(tmp_path_factory.mktemp("grpo"))
    config.data.rows = 96
    config.data.label_mix = {"4": 1.0, "3": 0.0, "2": 0.0, "1": 0.0}
    config.model.dtype = "float32"
    data_stage.run(config)
    rl = config.grpo
    # Adam's first steps move every weight by about lr: warm up, or one step can wreck the tiny model.
    for key, value in dict(
        steps=12,
        prompts_per_step=4,
        group_size=8,
        micro_batch_size=8,
        num_workers=2,
        cpus_per_worker=1,
        lr=2e-3,
        warmup_ratio=0.25,
        bf16=False,
        max_new_tokens=8,
        format_gate=False,
        kl_coef=0.0,
        min_pass_rate=0.0,
        max_pass_rate=1.0,
        max_refill_rounds=3,
        sync_tolerance=1e-3,
        checkpoint_every_steps=4,
    ).items():
        setattr(rl, key, value)
    return config, start


def _logged(run_dir):
    return [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]


def test_grpo_learns_a_learnable_reward_with_verified_syncs(learnable):
    from taosr.ray_jobs import grpo

    config, start = learnable
    out = f"{config.run_dir}/grpo"
    summary = grpo.train(config, start, out)
    steps = _logged(out)
    assert [s["step"] for s in steps] == list(range(1, 13))
    rewards = [s["reward_mean"] for s in steps]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.08, rewards
    for s in steps:
        assert s["sync_gap"] is not None and s["sync_gap"] < 1e-3
        # Each logged quantity in its range, not merely present.
        assert math.isfinite(s["kl"]) and s["kl"] >= -1e-6, s["kl"]
        for share in ("clip_fraction", "dropped_fraction", "format_error_rate"):
            assert 0.0 <= s[share] <= 1.0, (share, s[share])
        # Every prompt here is level 4: shares (0, 0, 0, 1) have a coefficient of variation of sqrt(3).
        assert s["entropy"] > 0 and s["batch_label_cv"] == pytest.approx(math.sqrt(3))
        assert 1 <= s["response_length"] <= config.grpo.max_new_tokens
        for phase in ("rollout_s", "reward_s", "train_s", "sync_s"):
            assert s[phase] > 0, (phase, s[phase])
        # The step's wall time covers its logged phases and whatever ran between them.
        assert s["step_s"] >= s["rollout_s"] + s["reward_s"] + s["train_s"] + s["sync_s"] - 1e-3, s
    assert summary["model"].endswith("grpo/model")


def test_one_token_rollouts_learn_through_the_shared_prompt_pass(learnable):
    """The embedded default's recipe: one-token rollouts, so the learner scores each group with
    one forward of its prompt. Through the real loop (two ranks, engines, weight sync) the
    reward must rise as it does with longer rollouts, every response one token long."""
    from taosr.ray_jobs import grpo

    config, start = learnable
    config = copy.deepcopy(config)
    config.grpo.max_new_tokens = 1
    out = f"{config.run_dir}/grpo-one-token"
    grpo.train(config, start, out)
    steps = _logged(out)
    assert [s["step"] for s in steps] == list(range(1, 13))
    rewards = [s["reward_mean"] for s in steps]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.08, rewards
    assert all(s["response_length"] == 1.0 and s["sync_gap"] < 1e-3 for s in steps)
    assert all(
        s["trained_tokens"] == config.grpo.prompts_per_step * config.grpo.group_size
        for s in steps
        if not s["skipped_update"] and s["groups_kept"] == config.grpo.prompts_per_step
    )


def test_grpo_validates_while_it_trains_and_keeps_the_best_checked_step(learnable):
    """Validation at step 0 (the start model) and every eval_every_steps; the saved model is the
    checked step with the best validation macro-F1, and scoring the saved folder again gives
    exactly the macro-F1 logged for that step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taosr.first_token import first_token_scores, validation_metrics
    from taosr.formats import ResponseFormat
    from taosr.ray_jobs import grpo
    from taosr.training.validation import run_validation_set

    config, start = learnable
    config = copy.deepcopy(config)
    config.grpo.max_new_tokens, config.grpo.eval_every_steps, config.grpo.eval_examples = 1, 4, 12
    out = f"{config.run_dir}/grpo-validated"
    summary = grpo.train(config, start, out)
    checks = [s for s in _logged(out) if "val_macro_f1" in s]
    assert [c["step"] for c in checks] == [0, 4, 8, 12]
    best = max(checks, key=lambda c: (c["val_macro_f1"], -c["step"]))  # ties keep the earlier step
    assert summary["saved_step"] == best["step"] and summary["stop_reason"] == "step budget: 12 of 12 steps"
    tokenizer = AutoTokenizer.from_pretrained(summary["model"])
    validation = run_validation_set(config.run_dir, "", tokenizer, ResponseFormat.POST_COT, 12, config.seed)
    saved = AutoModelForCausalLM.from_pretrained(summary["model"])
    probs, logprobs = first_token_scores(saved, validation["prompts"], validation["level_ids"], validation["pad_id"])
    assert validation_metrics(probs, logprobs, validation["gold"])["macro_f1"] == pytest.approx(
        best["val_macro_f1"], abs=1e-6
    )


def test_grpo_without_a_validation_gain_stops_on_patience_and_hands_on_its_start_model(learnable):
    """lr 0: no check can beat step 0, so with patience 1 both ranks leave after the first check
    and the saved model is the start model (step 0)."""
    import torch
    from transformers import AutoModelForCausalLM

    from taosr.ray_jobs import grpo

    config, start = learnable
    config = copy.deepcopy(config)
    config.grpo.max_new_tokens, config.grpo.lr = 1, 0.0
    config.grpo.eval_every_steps, config.grpo.eval_examples, config.grpo.patience = 2, 8, 1
    out = f"{config.run_dir}/grpo-patience"
    summary = grpo.train(config, start, out)
    assert [s["step"] for s in _logged(out)] == [0, 1, 2]
    assert summary["stop_reason"].startswith("patience: 1 validation checks") and summary["stopped_early"] == 1
    assert summary["saved_step"] == 0 and summary["step"] == 2
    saved = AutoModelForCausalLM.from_pretrained(summary["model"]).state_dict()
    begun = AutoModelForCausalLM.from_pretrained(start).state_dict()
    assert all(torch.equal(saved[name], begun[name]) for name in begun)


def test_sync_probe_stops_a_run_whose_weights_were_not_pushed(learnable):
    from taosr.ray_jobs import grpo

    config, start = learnable
    config = copy.deepcopy(config)
    config.grpo.steps, config.grpo.faults.skip_sync_step = 3, 1
    config.grpo.warmup_ratio = 0.0  # the skipped step must really change the weights
    with pytest.raises(Exception, match="weight sync check failed"):
        grpo.train(config, start, f"{config.run_dir}/grpo-skipped-sync")


def test_a_policy_that_lost_the_format_stops_the_run_with_the_cause(learnable):
    """The label-only start model never writes the five steps: with the format gate on, every
    rollout earns 0, every group is dropped, and after stall_alarm_steps the job stops."""
    from taosr.ray_jobs import grpo

    config, start = learnable
    config = copy.deepcopy(config)
    config.grpo.steps, config.grpo.format_gate, config.grpo.stall_alarm_steps = 6, True, 2
    config.grpo.max_refill_rounds = 1
    with pytest.raises(Exception, match="2 steps in a row kept no group, and 100% of step 2's rollouts broke"):
        grpo.train(config, start, f"{config.run_dir}/grpo-lost-format")


def _with_train_prompts(config, count, run_dir, labels=None):
    """A copy of the run's accepted logs keeping only ``count`` training rows (others untouched),
    their gold levels replaced by ``labels`` when given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(f"{config.run_dir}/data/accepted")
    rows = table.to_pylist()
    train = [r for r in rows if r["split"] == "train"][:count]
    for row, label in zip(train, labels or []):
        row["label"] = label
    (run_dir / "data" / "accepted").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(train + [r for r in rows if r["split"] != "train"], schema=table.schema),
        run_dir / "data" / "accepted" / "part-0.parquet",
    )
    config = copy.deepcopy(config)
    config.run_dir = str(run_dir)
    return config


def _first_token_level_probs(model_dir, prompts):
    """P(level 1..4) at the first answer token of each prompt, as eval scores it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taosr.first_token import first_token_scores
    from taosr.models import level_token_ids

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    level_ids = level_token_ids(tokenizer)
    probs, _ = first_token_scores(
        model, [p["prompt_ids"] for p in prompts], [level_ids[lv] for lv in (1, 2, 3, 4)], tokenizer.pad_token_id or 0
    )
    return probs


def test_on_a_two_level_mix_grpo_learns_each_prompt_not_one_level(learnable, tmp_path):
    """Half the prompts' gold level is 4, half 2: a policy that answers one level everywhere
    earns 0.5, the collapse the all-4 test cannot tell from learning. Here the reward must pass
    that ceiling, and every prompt's own gold level must gain probability and become the
    argmax: collapsing to either level lowers the other half's. Level 2 because the start model
    samples it (about a quarter of its mass); it gives level 1 under 5%, so a group of 8 seldom
    holds a right answer and dynamic sampling drops it as equal-reward (tried: with 4 and 1 the
    policy collapsed to 4 in 12 steps)."""
    from taosr.ray_jobs import grpo

    config, start = learnable
    config = _with_train_prompts(config, 4, tmp_path, labels=[4, 2, 4, 2])
    rl = config.grpo
    # Telling four near-identical prompts apart takes the tiny model 20-30 steps; 48 steps of
    # 16 rollouts learnt it from each of three start models (24 steps of 8 from one of two).
    rl.max_new_tokens, rl.steps, rl.group_size, rl.checkpoint_every_steps = 1, 48, 16, 100
    out = f"{config.run_dir}/grpo-two-levels"
    grpo.train(config, start, out)
    steps = _logged(out)
    assert [s["step"] for s in steps] == list(range(1, 49))
    prompts, _ = rl_stage.training_prompts(config, start, rl)
    assert sorted(p["label"] for p in prompts) == [2, 2, 4, 4]
    rewards = [s["reward_mean"] for s in steps]
    assert sum(rewards[-3:]) / 3 > 0.7, rewards
    before, after = _first_token_level_probs(start, prompts), _first_token_level_probs(f"{out}/model", prompts)
    gold = [p["label"] - 1 for p in prompts]
    for row, level in enumerate(gold):
        assert after[row, level] > before[row, level], (prompts[row]["label"], before[row], after[row])
        assert after[row].argmax() == level, (prompts[row]["label"], after[row])


def test_a_run_crashed_right_after_an_epoch_boundary_resumes_without_repeating_or_skipping(learnable, tmp_path):
    """8 training prompts, exactly 4 drawn per step (one round): the checkpoint after step 2
    falls exactly at the end of the prompt stream's first epoch. The run crashes after step 3
    and resumes from that checkpoint; every step must draw exactly the prompts an uninterrupted
    sampler would."""
    from taosr.label_balance import BalancedSampler
    from taosr.ray_jobs import grpo
    from taosr.training.rl import prompts_digest

    config, start = learnable
    config = _with_train_prompts(config, 8, tmp_path)
    rl = config.grpo
    rl.steps, rl.checkpoint_every_steps, rl.faults.crash_after_step = 5, 2, 3
    rl.oversample, rl.max_refill_rounds = 1.0, 1
    out = f"{config.run_dir}/grpo-resumed"
    grpo.train(config, start, out, max_failures=1)
    steps = _logged(out)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    assert [s["prompt_cursor"] for s in steps] == [4, 8, 12, 16, 20]  # the checkpoint (step 2) ends epoch 1
    prompts, _ = rl_stage.training_prompts(config, start, rl)
    assert len(prompts) == 8
    sampler = BalancedSampler([p["label"] for p in prompts], rl.label_cv, config.seed)
    expected = [prompts_digest([str(prompts[i]["id"]) for i in sampler.take(4)]) for _ in steps]
    assert [s["prompts_digest"] for s in steps] == expected


def test_srpo_reuses_the_loop_and_runs_its_curriculum_stages_in_order(learnable):
    from dataclasses import asdict

    from taosr.config import SrpoConfig
    from taosr.ray_jobs import srpo

    config, start = learnable
    config = copy.deepcopy(config)
    config.srpo = SrpoConfig(
        **{
            **asdict(config.grpo),
            "advantage": "srpo",
            "lam": 0.5,
            "verifier_coverage": 0.5,
            "checkpoint_every_steps": 10,
            "curriculum": [{"name": "first", "steps": 2}, {"name": "second", "steps": 1}],
        }
    )
    result = srpo.train(config, start, f"{config.run_dir}/srpo")
    first = _logged(f"{config.run_dir}/srpo/stage-first")
    second = _logged(f"{config.run_dir}/srpo/stage-second")
    assert [s["step"] for s in first] == [1, 2] and [s["step"] for s in second] == [1]
    assert "step_reward_from_verifier" in first[0] and "unsegmented_rollouts" in first[0]
    assert result["curriculum"]["first"]["prompts"]["verifier_annotations"] > 0
    info = json.loads(open(f"{config.run_dir}/srpo/model/taosr-model.json").read())
    assert info["base_model"].endswith("stage-first/model")  # each stage starts from the one before


@pytest.mark.timeout(900)
def test_a_sigkilled_job_resumes_from_its_checkpoint_when_run_again(learnable, ray_cluster, tmp_path):
    """The whole job killed (SIGKILL to the driver's process group, the way a lost head node or
    an operator's kill -9 ends it) once a checkpoint is registered; the same command run again
    resumes from that checkpoint: every step logged once, and each step drew the prompts an
    uninterrupted run's sampler draws."""
    import os
    import re

    from taosr.label_balance import BalancedSampler
    from taosr.training.rl import prompts_digest
    from tests.conftest import kill_once_resumable, stage_job, wait_for_free_cpus

    config, start = learnable
    config = _with_train_prompts(config, 8, tmp_path)
    rl = config.grpo
    rl.steps, rl.checkpoint_every_steps, rl.oversample, rl.max_refill_rounds = 6, 2, 1.0, 1
    (tmp_path / "sft").mkdir()
    os.symlink(start, tmp_path / "sft" / "model")  # the job's start policy: the run's latest

    def job():
        return stage_job("grpo", config, ray_cluster.get_runtime_context().gcs_address, tmp_path)

    kill_once_resumable(job(), tmp_path / "grpo", timeout=300)
    assert not (tmp_path / "grpo" / "model").exists()
    wait_for_free_cpus(ray_cluster, rl.num_workers * rl.cpus_per_worker + rl.num_engines * rl.cpus_per_engine, 120)
    rerun = job()
    output, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, output[-4000:]
    started = [int(step) for step in re.findall(r'"start_step": (\d+)', output)]  # rank 0's line, via Ray's log
    assert started and started[0] > 0 and started[0] % rl.checkpoint_every_steps == 0, output[-3000:]
    steps = _logged(tmp_path / "grpo")
    assert [s["step"] for s in steps] == list(range(1, rl.steps + 1))
    prompts, _ = rl_stage.training_prompts(config, start, rl)
    sampler = BalancedSampler([p["label"] for p in prompts], rl.label_cv, config.seed)
    drawn = [[str(prompts[i]["id"]) for i in sampler.take(rl.prompts_per_step)] for _ in steps]
    assert [s["prompts_digest"] for s in steps] == [prompts_digest(ids) for ids in drawn]
    assert (tmp_path / "grpo" / "model" / "config.json").exists()


def test_zero3_learners_with_the_collective_sync_match_a_one_rank_run_and_both_survive_an_engine_restart(learnable):
    """Two ZeRO-3 ranks (no rank holds the whole model) send their weights to the engine over a
    gloo group, bucket by bucket, and must train what one ZeRO-0 rank syncing through the object
    store trains from the same seed: the same first rollouts and loss, the engine's log-probs the
    learner's after every sync. In both runs the engine is killed before step 3 and Ray restarts
    it with the start model: the object-store run repairs it from the stored buckets, the
    collective run forms a fresh group and sends the weights again; either way step 3 samples
    from the learner's weights (importance ratios at 1; stale weights would give no error).
    Validation runs on every ZeRO-3 rank (each forward gathers the layers from all of them)."""
    from taosr.ray_jobs import grpo

    config, start = learnable
    runs = {}
    for name, workers, zero_stage, sync in (("one", 1, 0, "object_store"), ("zero3", 2, 3, "collective")):
        layout = copy.deepcopy(config)
        rl = layout.grpo
        rl.steps, rl.max_new_tokens, rl.checkpoint_every_steps = 3, 1, 10
        rl.num_workers, rl.cpus_per_worker, rl.zero_stage, rl.weight_sync = workers, 2 // workers, zero_stage, sync
        rl.sync_bucket_mb = 0.05  # about 8 buckets of the tiny model
        rl.eval_every_steps, rl.eval_examples = 3, 8
        rl.faults.kill_engine_before_step = 3
        out = f"{config.run_dir}/grpo-layout-{name}"
        summary = grpo.train(layout, start, out)
        runs[name] = [s for s in _logged(out) if s["step"] > 0]
        assert [c["step"] for c in _logged(out) if "val_macro_f1" in c] == [0, 3], name
        assert summary["model"].endswith(f"grpo-layout-{name}/model")
    one, zero3 = runs["one"], runs["zero3"]
    assert one[0]["reward_mean"] == zero3[0]["reward_mean"]
    assert zero3[0]["loss"] == pytest.approx(one[0]["loss"], abs=1e-5)
    assert zero3[1]["reward_mean"] == pytest.approx(one[1]["reward_mean"], abs=0.15)
    params = sum(s.numel for s in _plan_of(start))
    for name, steps in runs.items():
        assert [s["step"] for s in steps] == [1, 2, 3], name
        assert [s["engine_recoveries"] for s in steps] == [0, 0, 1], name
        assert abs(steps[2]["ratio_mean"] - 1.0) < 0.05, (name, steps[2]["ratio_mean"])
        for s in steps:
            assert s["sync_gap"] < 1e-3, (name, s)
            assert s["sync_bytes"] == 4 * params and s["sync_buckets"] > 4, (name, s)


def _plan_of(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from taosr.training.weight_sync import sync_plan

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return [spec for bucket in sync_plan(model, torch.float32, 0.05) for spec in bucket]
