"""The offline models, the level-token check, and first-token scoring on real engines."""

import json

import numpy as np
import pytest

from taosr.models import LevelTokenError, check_level_tokens, level_token_ids, resolve_model
from taosr.prompts import Item

from conftest import MODEL_CACHE

pytestmark = pytest.mark.slow


def test_tiny_model_levels_are_single_tokens_at_the_answer_position(tiny_model):
    from transformers import AutoTokenizer

    ids = level_token_ids(AutoTokenizer.from_pretrained(tiny_model))
    assert sorted(ids) == [1, 2, 3, 4] and len(set(ids.values())) == 4


def test_embedded_smollm2_materialises_and_passes_the_check():
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model("smollm2-135m", MODEL_CACHE)
    assert AutoConfig.from_pretrained(path).model_type == "llama"
    check_level_tokens(AutoTokenizer.from_pretrained(path))


def test_a_tokenizer_that_merges_the_label_is_rejected():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from taosr.models import CHATML_TEMPLATE

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(["4-Excellent 3-Related 2-Mismatch 1-Irrelevant"] * 200, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    with pytest.raises(LevelTokenError):
        check_level_tokens(tokenizer)


def test_unknown_model_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an embedded model"):
        resolve_model(str(tmp_path / "nothing"), MODEL_CACHE)


def test_vllm_first_token_probabilities_match_a_transformers_forward(tiny_model):
    from taosr.actors.scorer import LevelScorer

    hf = LevelScorer(tiny_model, engine="hf", dtype="float32")
    items = [
        Item("Spigen Case for iPhone 15, pink", "Electronics > Cases", {"color": "pink"}, 12.5),
        Item("Anker 20W USB-C Charger"),
        Item("Linen maxi dress, white", attributes={"material": "linen"}),
    ]
    prompts = hf.prompts_for(["phone case not pink"] * 2 + ["beach wedding outfit"], items)
    assert prompts[0][:80] == prompts[1][:80]  # instructions and query first: a shared prefix
    expected = hf.score_prompts(prompts)
    vllm = LevelScorer(tiny_model, engine="vllm", dtype="float32", max_seq_len=1024, kv_block_size=32)
    got = vllm.score_prompts(prompts)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(got, expected, atol=1e-4)

    # A later item of the same query reuses the query's cached prefix block (the tiny model's
    # prompts share 42 tokens: one 32-token block; vLLM's CPU default of 128 would reuse none),
    # and the level distribution read over cached KV is still the forward pass's.
    later = hf.prompts_for(["phone case not pink"], [Item("OtterBox Defender Case for iPhone 15, black")])
    output = vllm.llm.generate(later, vllm.params, use_tqdm=False)[0]
    assert output.num_cached_tokens == 32
    logprobs = output.outputs[0].logprobs[0]
    np.testing.assert_allclose(
        [np.exp(logprobs[i].logprob) for i in vllm.ids_in_order], hf.score_prompts(later)[0], atol=1e-4
    )


def test_a_bf16_engine_scores_levels_with_a_float32_head_so_rows_do_not_tie():
    """SmolLM2's level logits at the answer are about 20: in bf16 they come in steps of 0.125,
    so with a bf16 head 43% of Home Depot's test rows tied at the top and 2,142 rows got 74
    distinct distributions. The scorer's head is float32 on both engines."""
    from taosr.actors.scorer import LevelScorer

    vllm = LevelScorer(resolve_model("smollm2-135m", MODEL_CACHE), engine="vllm", dtype="bfloat16")
    queries = ["cordless drill", "red running shoes size 9", "usb c charger", "oak dining table", "wool socks"]
    items = [
        Item("DEWALT 20V MAX Cordless Drill Kit"),
        Item("Nike Revolution 6 Running Shoe, red"),
        Item("Anker 20W USB-C Charger"),
        Item("Solid oak dining table, 6 seats", "Furniture > Tables"),
        Item("Merino wool hiking socks, 3 pairs", attributes={"size": "M"}),
    ]
    prompts = vllm.prompts_for([q for q in queries for _ in items], items * len(queries))
    probs = vllm.score_prompts(prompts)
    # Differences of bf16 numbers of magnitude >= 1/8 are multiples of 2^-10: a bf16 head's log
    # ratios all are; a float32 head's fall on that grid (within 1e-5) about 2% of the time.
    log_ratios = np.log(probs[:, :, None] / probs[:, None, :])[:, *np.triu_indices(4, k=1)].ravel()
    on_grid = np.abs(log_ratios * 2**10 - np.round(log_ratios * 2**10)) < 2**10 * 1e-5
    assert on_grid.mean() < 0.2, f"{on_grid.mean():.0%} of the level log-ratios sit on the bf16 grid"
    assert len({tuple(row) for row in probs.round(9)}) == len(prompts)


def test_an_in_process_engine_after_numba_fails_at_once_with_the_cause(tiny_model):
    """The trap of docs/cpu.md, closed for users: in a process that has loaded llvmlite (numba,
    bm25s), starting an in-process vLLM engine raises naming the cause before vLLM starts."""
    import subprocess
    import sys

    code = (
        "import os; os.environ['VLLM_ENABLE_V1_MULTIPROCESSING'] = '0'\n"
        "import numba\n"
        "from taosr.actors.scorer import LevelScorer\n"
        "try:\n"
        f"    LevelScorer({tiny_model!r}, engine='vllm', dtype='float32')\n"
        "except RuntimeError as error:\n"
        "    print('refused:', error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    assert "refused:" in out and "llvmlite" in out and "own Ray actor" in out, out


def test_eval_job_on_ray_data_with_a_vllm_actor(ray_cluster, tiny_model, tmp_path):
    from taosr.config import load_config
    from taosr.metrics import classification_metrics
    from taosr.ray_jobs import data as data_stage
    from taosr.ray_jobs import eval as eval_stage

    config = load_config(
        None,
        [
            f"run_dir={tmp_path}",
            "data.rows=150",
            "model.name=tiny",
            "model.dtype=float32",
            "eval.batch_size=16",
            "eval.split=test",
            "eval.decode_samples=5",
            "eval.max_new_tokens=12",
        ],
    )
    counts = data_stage.run(config).counts
    assert counts["accepted"] == 150
    metrics = eval_stage.evaluate_model(config, "tiny", tiny_model)
    predictions = [
        json.loads(line) for line in (tmp_path / "eval" / "tiny" / "predictions.jsonl").read_text().splitlines()
    ]
    assert metrics["overall"]["n"] == len(predictions) > 0
    for row in predictions:
        probs = [row[f"p_{level}"] for level in (4, 3, 2, 1)]
        assert sum(probs) == pytest.approx(1.0) and row["pred"] == (4, 3, 2, 1)[int(np.argmax(probs))]
    recomputed = classification_metrics([r["label"] for r in predictions], [r["pred"] for r in predictions])
    assert metrics["overall"]["accuracy"] == pytest.approx(recomputed["accuracy"])
    # the same engine decoded the first 5 rows: format errors come from those alone
    decoded = [r for r in predictions if r["format_ok"] is not None]
    assert [r["id"] for r in decoded] == [r["id"] for r in predictions[:5]] and len(predictions) > 16
    assert metrics["overall"]["format_error_rate"] == pytest.approx(sum(not r["format_ok"] for r in decoded) / 5)
    assert (tmp_path / "eval" / "tiny" / "metrics.md").read_text().startswith("## tiny: overall")
    assert (tmp_path / "data" / "config.yaml").is_file()
