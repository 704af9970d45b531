"""Stage 2 on the real components: a vLLM rollout actor whose log-probs and weight updates are
checked against transformers, pass@N sampling on Ray Data, and two-worker DeepSpeed DPO."""

import copy
import json

import pyarrow.parquet as pq
import pytest
import torch

from taosr.prompts import Item, build_prompt

pytestmark = pytest.mark.slow


def _hf_token_logprobs(model, prompt_ids, response_ids):
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    start = len(prompt_ids)
    return [float(logprobs[start + i - 1, token]) for i, token in enumerate(response_ids)]


def test_rollout_actor_logprobs_and_weight_updates_match_transformers(ray_cluster, tiny_model):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taosr.actors.rollout import SamplingSpec, rollout_actor_class

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    actor = rollout_actor_class(num_cpus=1).remote(tiny_model, dtype="float32", max_seq_len=512)
    prompts = [
        build_prompt(tokenizer, q, Item(t))
        for q, t in [
            ("usb c charger", "Anker 20W USB-C charger"),
            ("red running shoes", "Nike Pegasus, blue"),
            ("tent for 4 people", "2-person dome tent"),
        ]
    ]
    groups = ray.get(actor.generate.remote(prompts, SamplingSpec(n=3, temperature=1.0, max_new_tokens=20)))
    assert [len(g) for g in groups] == [3, 3, 3]
    worst = 0.0
    for prompt, group in zip(prompts, groups):
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        for rollout in group:
            assert len(rollout.logprobs) == len(rollout.token_ids) > 0
            expected = _hf_token_logprobs(model, prompt_ids, rollout.token_ids)
            worst = max(worst, max(abs(a - b) for a, b in zip(expected, rollout.logprobs)))
    assert worst < 1e-4

    # New weights in memory: the engine's teacher-forced log-probs follow the updated model.
    probe_prompt = tokenizer.encode(prompts[0], add_special_tokens=False)
    probe_response = groups[0][0].token_ids
    before = ray.get(actor.sequence_token_logprobs.remote(probe_prompt, probe_response))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mlp" in name:
                param.mul_(1.05)
    version = ray.get(actor.update_weights.remote(list(model.state_dict().items()), 7))
    after = ray.get(actor.sequence_token_logprobs.remote(probe_prompt, probe_response))
    assert version == 7
    assert max(abs(a - b) for a, b in zip(before, after)) > 1e-3
    expected = _hf_token_logprobs(model, probe_prompt, probe_response)
    assert max(abs(a - b) for a, b in zip(expected, after)) < 1e-4

    # Bucketed syncs, by both paths: every parameter sent once, in small buckets, and the engine
    # follows each update (the collective group is gloo between this process and the engine).
    from taosr.actors.rollout_group import RolloutGroup
    from taosr.training.weight_sync import parameter_buckets, sync_plan

    parameters = dict(model.named_parameters(remove_duplicate=False))  # the tied lm_head too
    plan = sync_plan(model, torch.float32, bucket_mb=0.05)
    assert len(plan) > 4 and sum(len(b) for b in plan) == len(parameters)
    for version, sync in ((8, "object_store"), (9, "collective")):
        with torch.no_grad():  # every tensor moves, embeddings and norms included
            for param in model.parameters():
                param.add_(0.01 * torch.randn_like(param))
        group = RolloutGroup([actor], sync=sync)
        buckets = parameter_buckets(model, plan, torch.float32, zero3=False, keep=True)
        sent = group.push_buckets(buckets, plan, "float32", version, timeout_s=120)
        assert sent == {
            "sync_buckets": len(plan),
            "sync_tensors": len(parameters),
            "sync_bytes": 4 * sum(p.numel() for p in parameters.values()),
        }, sync
        synced = ray.get(actor.sequence_token_logprobs.remote(probe_prompt, probe_response))
        expected = _hf_token_logprobs(model, probe_prompt, probe_response)
        assert max(abs(a - b) for a, b in zip(expected, synced)) < 1e-4, sync
        assert ray.get(actor.held_version.remote()) == version
        group.close_weight_group()
    ray.kill(actor)


@pytest.fixture(scope="module")
def sampled(stage1_run):
    from taosr.ray_jobs import sample as sample_stage

    config, _, sft, run_dir = stage1_run
    config = copy.deepcopy(config)
    config.model.dtype = "float32"
    config.sample.n, config.sample.max_prompts, config.sample.max_new_tokens = 4, 24, 64
    summary = sample_stage.run(config, sft["model"])
    return config, summary, run_dir


def test_pass_at_n_writes_samples_pass_rates_and_a_monotone_pass_at_k_table(sampled):
    _, summary, run_dir = sampled
    samples = pq.read_table(run_dir / "sample" / "samples").to_pylist()
    rates = pq.read_table(run_dir / "sample" / "pass_rates").to_pylist()
    assert len(samples) == len(rates) == summary["prompts"] == 24
    for row in samples:
        assert row["n"] == len(row["samples"]) == len(row["sample_labels"]) == 4
        assert row["num_correct"] == sum(label == row["label"] for label in row["sample_labels"])
        assert row["oracle"].startswith(f"{row['label']}-")
    curve = [summary["overall"][f"pass@{k}"] for k in range(1, 5)]
    assert curve == sorted(curve) and 0.0 <= curve[0] <= curve[-1] <= 1.0
    mean_rate = sum(r["pass_rate"] for r in rates) / len(rates)
    assert curve[0] == pytest.approx(mean_rate)  # pass@1 is the mean per-prompt pass rate
    assert json.loads((run_dir / "sample" / "pass_at_k.json").read_text())["prompts"] == 24


def test_two_worker_dpo_grows_the_margin_of_chosen_over_rejected(sampled):
    from transformers import AutoModelForCausalLM

    from taosr.losses import sequence_logprobs
    from taosr.ray_jobs import dpo as dpo_stage
    from taosr.sft_examples import pad_batch

    config, _, run_dir = sampled
    config = copy.deepcopy(config)
    overrides = dict(
        num_workers=2,
        cpus_per_worker=1,
        micro_batch_size=2,
        lr=1e-3,
        epochs=3,
        bf16=False,
        max_seq_len=384,
        beta=0.1,
        pairs_per_prompt=2,
        log_every_steps=1,
    )
    for key, value in overrides.items():
        setattr(config.dpo, key, value)
    reference = str(run_dir / "sft" / "model")
    summary = dpo_stage.train(config, reference, str(run_dir / "dpo"))

    counts = summary["pairs"]
    assert counts["self_correction"] + counts["oracle"] == counts["pairs_built"] - counts["duplicates_removed"] > 0
    pairs = pq.read_table(run_dir / "dpo" / "pairs").to_pylist()
    assert {p["kind"] for p in pairs} <= {"self_correction", "oracle"}

    def margins(model_path):
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        seqs = [
            {"input_ids": p[f"{side}_input_ids"], "labels": p[f"{side}_labels"]}
            for side in ("chosen", "rejected")
            for p in pairs
        ]
        padded = {k: torch.tensor(v) for k, v in pad_batch(seqs, pad_id=0).items()}
        with torch.inference_mode():
            logps = sequence_logprobs(
                model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits, padded["labels"]
            )
        return logps[: len(pairs)] - logps[len(pairs) :]

    before, after = margins(reference), margins(summary["model"])
    stored = torch.tensor([p["reference_chosen"] - p["reference_rejected"] for p in pairs])
    assert torch.allclose(before, stored.float(), atol=1e-3)  # the stored reference is the SFT model's
    assert float((after - before).mean()) > 1.0, (before, after)
    logged = [json.loads(line) for line in (run_dir / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["reward_margin"] > logged[0]["reward_margin"]


@pytest.mark.timeout(900)
def test_a_sigkilled_dpo_job_resumes_from_its_checkpoint_when_run_again(sampled, ray_cluster, tmp_path):
    """DPO's job killed (SIGKILL to its process group) once a checkpoint is registered; the same
    command again rebuilds the pairs and their reference log-probs, resumes training from the
    checkpoint and logs every step once."""
    import os

    from tests.conftest import assert_supervised_stage_resumed, kill_and_rerun

    config, _, run_dir = sampled
    config = copy.deepcopy(config)
    for stage in ("data", "sft", "sample"):  # the run's upstream, shared read-only
        os.symlink(run_dir / stage, tmp_path / stage)
    config.run_dir = str(tmp_path)
    for key, value in dict(
        num_workers=2,
        cpus_per_worker=1,
        micro_batch_size=2,
        lr=1e-3,
        epochs=2,
        bf16=False,
        max_seq_len=384,
        pairs_per_prompt=2,
        log_every_steps=1,
        checkpoint_every_steps=4,
    ).items():
        setattr(config.dpo, key, value)

    output = kill_and_rerun("dpo", config, ray_cluster, tmp_path, config.dpo.num_workers * config.dpo.cpus_per_worker)
    summary = assert_supervised_stage_resumed("dpo", output, tmp_path, every=4)
    assert summary["pairs"]["pairs_built"] > 0  # the rerun built its pairs again from the run's samples
