"""A recipe that collapses to one level must never land: a short SFT run of the embedded model
(SmolLM2-135M) through the real stage, on held-out rows of a two-level task whose signal is in
the text (the item is what the query names, or a wrong kind of item), must beat the label prior."""

import pytest

pytestmark = pytest.mark.slow


def test_a_short_sft_of_the_embedded_model_beats_the_label_prior(ray_cluster, tmp_path):
    from taosr.config import load_config
    from taosr.models import resolve_model
    from taosr.ray_jobs import cot as cot_stage
    from taosr.ray_jobs import data as data_stage
    from taosr.ray_jobs import sft as sft_stage
    from taosr.ray_jobs.eval import evaluate_model
    from tests.conftest import MODEL_CACHE

    config = load_config("configs/tiny.yaml", [
        f"run_dir={tmp_path}", f"model.cache_dir={MODEL_CACHE}", "data.rows=900",
        "data.label_mix={'4': 0.5, '3': 0.0, '2': 0.0, '1': 0.5}",
        "data.query_type_mix={plain: 1.0}", "sft.max_examples=480", "sft.eval_every_steps=0",
        "sft.checkpoint_every_steps=1000", "eval.engine=vllm", "eval.decode_samples=0", "eval.max_examples=96"])
    data_stage.run(config)
    cot_stage.run(config)
    base = resolve_model(config.model.name, config.model.cache_dir)
    summary = sft_stage.train(config, base, str(tmp_path / "sft"))
    metrics = evaluate_model(config, "sft", summary["model"])["overall"]
    predicted = {level for level in (1, 4) if metrics.get(f"f1_{level}")}
    # A constant answer on a two-level split scores macro-F1 <= 1/3 and QWK 0.
    assert predicted == {1, 4} and metrics["macro_f1"] > 0.6 and metrics["qwk"] > 0.3, metrics
