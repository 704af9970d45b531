"""What a GRPO-family stage (GRPO, each SRPO curriculum stage) does around the RL loop: tokenise
and pre-filter the training prompts, start the rollout engines and the GenRM judge, run
``taosr.training.rl.rl_train_loop`` under Ray Train, write the summary (docs/method.md section 5,
docs/architecture.md "The RL loop on Ray")."""

from __future__ import annotations

from taosr.config import GrpoConfig, TaosrConfig, step_reward_section, to_yaml
from taosr.datasets.storage import absolute, exists, join, local_dir, read_parquet, read_text, write_json, write_text
from taosr.formats import ResponseFormat
from taosr.labels import label_text
from taosr.models import model_info
from taosr.prompts import PROMPT_COLUMNS as ITEM_COLUMNS
from taosr.prompts import build_prompt, item_from_row, render_item
from taosr.training.trainer import fit
from taosr.training.validation import run_validation_set
from taosr.verifier import OfflineVerifier, annotation_key

PROMPT_COLUMNS = ("id", "item_id", "label", "query_type", *ITEM_COLUMNS)  # the ids and labels, then what a prompt reads


class PromptTokenizer:
    """Ray Data callable: log rows -> (id, label, query_type, prompt_ids) in the policy's template."""

    def __init__(self, model_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(local_dir(model_path))

    def __call__(self, batch):
        import pyarrow as pa

        rows = batch.to_pylist()
        items = [item_from_row(r) for r in rows]
        prompts = [
            build_prompt(self.tokenizer, r["query"], item, ResponseFormat.POST_COT) for r, item in zip(rows, items)
        ]
        return pa.table(
            {
                "id": [r["id"] for r in rows],
                "query": [r["query"] for r in rows],
                "item_text": [render_item(item) for item in items],  # what the GenRM reads
                "label": [int(r["label"]) for r in rows],
                "query_type": [r.get("query_type") or "unknown" for r in rows],
                "annotation_key": [annotation_key(r["query"], str(r.get("item_id") or r["title"])) for r in rows],
                "prompt_ids": pa.array(
                    [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts], pa.list_(pa.int32())
                ),
            }
        )


def tokenized_training_prompts(config: TaosrConfig, model_path: str) -> list[dict]:
    """Every training-split row as a prompt in the policy's template, tokenised."""
    accepted = read_parquet(join(config.run_dir, "data", "accepted"), config.data.s3_endpoint)
    rows = accepted.filter(expr="split == 'train'").select_columns(list(PROMPT_COLUMNS))
    return rows.map_batches(
        PromptTokenizer, fn_constructor_args=(model_path,), batch_format="pyarrow", batch_size=256, concurrency=1
    ).take_all()


def training_prompts(
    config: TaosrConfig, model_path: str, rl: GrpoConfig, tokenized: list[dict] | None = None
) -> tuple[list[dict], dict]:
    """Tokenised training prompts, pre-filtered by stage 2's pass rates. Returns (prompts, counts).
    ``tokenized``: the output of ``tokenized_training_prompts`` for the same tokenizer, when the
    caller has it already (SRPO's curriculum stages differ only in their pre-filter window)."""
    from taosr.label_balance import prefilter_by_pass_rate

    prompts = tokenized if tokenized is not None else tokenized_training_prompts(config, model_path)
    counts = {"train_prompts": len(prompts), "offline_pass_rates": 0, "prefiltered_out": 0}
    rates_path = join(config.run_dir, "sample", "pass_rates")
    if exists(rates_path, config.data.s3_endpoint):
        rates = {r["id"]: r["pass_rate"] for r in read_parquet(rates_path, config.data.s3_endpoint).take_all()}
        keep = prefilter_by_pass_rate(rates, rl.prefilter_min, rl.prefilter_max)
        counts["offline_pass_rates"] = len(rates)
        before = len(prompts)
        prompts = [p for p in prompts if p["id"] not in rates or p["id"] in keep]
        counts["prefiltered_out"] = before - len(prompts)
    if not prompts:
        raise ValueError(f"no training prompts left for RL ({counts})")
    return [{**p, "prompt_ids": list(p["prompt_ids"])} for p in prompts], counts


def verifier_annotations(config: TaosrConfig, coverage: float) -> dict:
    """Step annotations of the training split, thinned to ``coverage`` (the offline verifier)."""
    accepted = read_parquet(join(config.run_dir, "data", "accepted"), config.data.s3_endpoint)
    rows = accepted.filter(expr="split == 'train'").select_columns(["query", "item_id", "title", "step_annotations"])
    return OfflineVerifier.from_rows(rows.iter_rows(), coverage=coverage, seed=config.seed).annotations


def probe_for(prompts: list[dict], model_path: str) -> dict:
    """A fixed (prompt, response) whose log-probs learner and engines must agree on after a sync."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local_dir(model_path))
    first = prompts[0]
    response = f"{label_text(first['label'])}\n1. Query: {first['query']}"
    return {"prompt_ids": first["prompt_ids"], "response_ids": tokenizer.encode(response, add_special_tokens=False)}


def check_layout(rl: GrpoConfig) -> None:
    from taosr.training.rl import micro_steps_per_step

    micro_steps_per_step(rl, rl.num_workers)  # raises unless the batch divides evenly
    if rl.group_size < 2:
        raise ValueError("group_size must be at least 2: advantages are relative to the group")


def start_judge(config: TaosrConfig, rl: GrpoConfig, judge_model: str | None = None):
    """The GenRM actor an SRPO run scores steps with (``judge_model``, by default
    ``genrm_model_for``), or None when it has none."""
    judge_model = judge_model if judge_model is not None else genrm_model_for(config, rl)
    if not judge_model:
        return None
    rl = step_reward_section(rl)
    from taosr.actors.step_judge import step_judge_actor

    return step_judge_actor(
        absolute(judge_model),
        **config.ray.engine_options(rl.genrm_cpus_per_engine, rl.genrm_gpus_per_engine),
        dtype=config.model.dtype,
        max_seq_len=config.model.max_seq_len,
        kv_cache_gib=rl.kv_cache_gib,
        seed=config.seed,
        kv_block_size=config.model.kv_block_size,
        **config.ray.vllm_options(rl.genrm_gpu_memory_utilization),
    )


def train(
    config: TaosrConfig,
    start_model: str,
    out_dir: str,
    rl: GrpoConfig | None = None,
    stage: str = "grpo",
    max_failures: int = 0,
    judge=None,
    tokenized: list[dict] | None = None,
) -> dict:
    """``judge``: a started GenRM actor to use (SRPO's curriculum shares one across its stages);
    otherwise one is started here when the run needs it, and stopped at the end. ``tokenized``:
    the training prompts already tokenised (see ``training_prompts``)."""
    import ray
    from transformers import AutoTokenizer

    from taosr.actors.rollout_group import RolloutGroup
    from taosr.training.loop_inputs import RlInputs
    from taosr.training.rl import rl_train_loop

    rl = rl or config.grpo
    check_layout(rl)
    start_model = absolute(start_model)
    prompts, counts = training_prompts(config, start_model, rl, tokenized)
    annotations = verifier_annotations(config, step_reward_section(rl).verifier_coverage) if scores_steps(rl) else {}
    counts["verifier_annotations"] = len(annotations)
    genrm = genrm_choice(config, rl)
    counts["genrm"], counts["genrm_reason"] = genrm["model"], genrm["reason"]
    owns_judge = judge is None
    group = RolloutGroup.create(
        rl.num_engines,
        start_model,
        **config.ray.engine_options(rl.cpus_per_engine, rl.gpus_per_engine),
        dtype=config.model.dtype,
        max_seq_len=config.model.max_seq_len,
        seed=config.seed,
        kv_cache_gib=rl.kv_cache_gib,
        tensor_parallel_size=rl.tensor_parallel_size,
        kv_block_size=config.model.kv_block_size,
        **config.ray.vllm_options(rl.gpu_memory_utilization),
    )
    try:
        if owns_judge and counts["genrm"]:
            judge = start_judge(config, rl, counts["genrm"])
        tokenizer = AutoTokenizer.from_pretrained(local_dir(start_model))
        info = model_info(tokenizer, ResponseFormat.POST_COT.value, base_model=start_model, stage=stage)
        validation = (
            run_validation_set(
                config.run_dir,
                config.data.s3_endpoint,
                tokenizer,
                ResponseFormat.POST_COT,
                rl.eval_examples,
                config.seed,
            )
            if rl.eval_every_steps
            else None
        )
        inputs = RlInputs(
            rl=rl,
            stage=stage,
            seed=config.seed,
            model_path=start_model,
            validation=validation,
            prompts_ref=ray.put(prompts),
            probe=probe_for(prompts, start_model),
            annotations_ref=ray.put(annotations),
            genrm=judge,
            engines=group.engines,
            engine_dtype=config.model.dtype,
            model_info=info,
        )
        metrics = fit(
            rl_train_loop,
            inputs,
            rl,
            None,
            out_dir,
            config.data.s3_endpoint,
            config.ray,
            max_failures=max_failures,
        )
    finally:
        group.shutdown()
        if owns_judge and judge is not None:
            ray.kill(judge)
    summary = {"prompts": counts, **metrics}
    write_json(join(out_dir, "summary.json"), summary, config.data.s3_endpoint)
    write_text(join(out_dir, "config.yaml"), to_yaml(config), config.data.s3_endpoint)
    return {"model": join(out_dir, "model"), **summary}


def scores_steps(rl: GrpoConfig) -> bool:
    """Whether the stage's advantage estimator reads step rewards (its registration in
    ``taosr.advantages`` says so): then the offline verifier and the GenRM are needed."""
    from taosr.advantages import estimator_needs

    return "step_rewards" in estimator_needs(rl.advantage)


def genrm_model_for(config: TaosrConfig, rl: GrpoConfig) -> str | None:
    """The GenRM an SRPO run scores unverified steps with (``srpo.genrm``), or None."""
    return genrm_choice(config, rl)["model"]


def genrm_choice(config: TaosrConfig, rl: GrpoConfig) -> dict:
    """{"model": the GenRM an SRPO run uses or None, "reason": why}. ``auto`` takes the run's
    trained GenRM only when its held-out step accuracy beat its untrained base's beyond noise
    (genrm/summary.json's ``gain_over_base``): a judge no better than its base gives step
    rewards that carry no information about the steps, only noise in the advantages."""
    import json

    choice = getattr(rl, "genrm", "none") if scores_steps(rl) else "none"
    if choice == "none":
        return {
            "model": None,
            "reason": "no GenRM: srpo.genrm is none" if scores_steps(rl) else "no GenRM: outcome rewards only",
        }
    if choice != "auto":
        if not exists(join(choice, "config.json"), config.data.s3_endpoint):
            raise FileNotFoundError(f"srpo.genrm={choice!r} is not a model folder (use auto, none or a trained GenRM)")
        return {"model": choice, "reason": "the GenRM srpo.genrm names is used"}
    path = join(config.run_dir, "genrm", "model")
    if not exists(join(path, "config.json"), config.data.s3_endpoint):
        return {"model": None, "reason": "no GenRM: the run has none trained (genrm/model)"}
    summary_path = join(config.run_dir, "genrm", "summary.json")
    gain = (
        json.loads(read_text(summary_path, config.data.s3_endpoint)).get("gain_over_base")
        if exists(summary_path, config.data.s3_endpoint)
        else None
    )
    if gain is None:
        return {
            "model": None,
            "reason": "the GenRM is not used: it was not measured against its base on held-out steps "
            "(genrm.eval_rows, or no annotated rows in genrm.eval_split)",
        }
    measured = (
        f"held-out step accuracy {100 * gain['accuracy_b']:.1f}% against its base's "
        f"{100 * gain['accuracy_a']:.1f}%, gain {100 * gain['delta']:+.1f} "
        f"[{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}] on {gain['n']} questions"
    )
    if not gain["beats_base"]:
        verdict = "below its base beyond noise" if gain["beyond_noise"] else "within noise of its base"
        return {
            "model": None,
            "reason": f"the GenRM is not used: {measured}, {verdict}; steps the verifier cannot "
            "judge get the outcome advantage alone",
        }
    return {"model": path, "reason": f"the GenRM is used: {measured}"}
