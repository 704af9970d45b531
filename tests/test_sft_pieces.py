"""Pure pieces of stage 1: prompt masking, the masked loss, retrieval, teachers."""

import json
import math
import subprocess
import sys
import threading
import time

import pytest
import torch

from taosr.datasets.cot import RuleTeacher, judge_rationale
from taosr.datasets.knowledge import RULES
from taosr.datasets.retrieval import load_rules
from taosr.datasets.synthetic import generate_rows
from taosr.formats import Reasoning, ResponseFormat, render
from taosr.losses import label_window_start, labelled_logits, masked_token_nll, sequence_logprobs
from taosr.prompts import Item, build_prompt
from taosr.sft_examples import IGNORE_INDEX, pad_batch, tokenize_example

REASONING = Reasoning(
    "a charger for the iphone 15, which needs USB-C",
    "an Anker charger (connector Lightning)",
    "match",
    "the item is a charger, as asked",
    "violated",
    "connector is Lightning, but the query needs USB-C",
    2,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_prompt_is_masked_token_by_token_and_the_label_comes_first(tokenizer):
    prompt = build_prompt(tokenizer, "charger for iphone 15", Item("Anker 20W Charger, Lightning"))
    response = render(ResponseFormat.POST_COT, 2, REASONING)
    example = tokenize_example(tokenizer, prompt, response, max_len=1024)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    n = len(prompt_ids)
    assert example.input_ids[:n] == prompt_ids
    assert example.labels[:n] == [IGNORE_INDEX] * n
    assert example.labels[n:] == example.input_ids[n:]
    assert example.input_ids[n] == tokenizer.encode("2", add_special_tokens=False)[0]
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.input_ids[n:-1]) == response


def test_long_responses_are_cut_at_the_end_and_hopeless_prompts_skipped(tokenizer):
    prompt = build_prompt(tokenizer, "q", Item("t"))
    n = len(tokenizer.encode(prompt, add_special_tokens=False))
    cut = tokenize_example(tokenizer, prompt, render(ResponseFormat.POST_COT, 2, REASONING), max_len=n + 3)
    assert len(cut.input_ids) == n + 3 and cut.num_response_tokens == 3
    assert cut.input_ids[n] == tokenizer.encode("2", add_special_tokens=False)[0]
    assert tokenize_example(tokenizer, prompt, "2-Mismatch", max_len=n + 1) is None


def test_pad_batch():
    batch = pad_batch([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], pad_id=0)
    assert batch["input_ids"] == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"] == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"] == [[1, 1, 1], [1, 0, 0]]
    left = pad_batch(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], pad_id=0, left=True
    )
    assert left["input_ids"] == [[5, 6, 7], [0, 0, 8]]
    assert left["labels"] == [[-100, 6, 7], [-100, -100, 8]]
    assert left["attention_mask"] == [[1, 1, 1], [0, 0, 1]]
    assert left["position_ids"] == [[0, 1, 2], [0, 0, 0]]  # each sequence counts from 0
    from taosr.sft_examples import padded_decision_index

    rows = [
        {"input_ids": [5, 6, 7], "decision_index": 1},
        {"input_ids": [8], "decision_index": 0},
        {"input_ids": [9, 9], "decision_index": -1},
    ]
    assert padded_decision_index(rows, 3, left=True) == [1, 2, -1]
    assert padded_decision_index(rows, 3, left=False) == [1, 0, -1]


def test_masked_nll_by_hand():
    # position 0 predicts token 1 from logits [0, 0]: p = 1/2; position 1 predicts token 0 from
    # [ln 3, 0]: p = 3/4; the label at position 0 is masked and position 2's logits are unused.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [9.0, -9.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    loss, count = masked_token_nll(logits, labels)
    assert int(count) == 2
    assert float(loss) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)
    zero, none = masked_token_nll(logits, torch.full((1, 3), IGNORE_INDEX))
    assert int(none) == 0 and float(zero) == 0.0


def test_label_window_starts_where_the_earliest_label_is_predicted():
    labels = torch.tensor(
        [[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 5, 6], [IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX]]
    )
    assert label_window_start(labels) == 1  # column 2 is the first labelled one; column 1 predicts it
    assert label_window_start(torch.tensor([[4, 5]])) == 0
    assert label_window_start(torch.full((2, 3), IGNORE_INDEX)) == 0


def test_losses_on_the_label_window_equal_the_whole_sequence(tiny_model, tokenizer):
    """The window only skips the vocabulary projection of prompt columns: the SFT loss, its
    gradient and DPO's sequence log-probabilities must not change."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    examples = [
        tokenize_example(
            tokenizer,
            build_prompt(tokenizer, query, Item(title)),
            render(ResponseFormat.POST_COT, 2, REASONING),
            max_len=1024,
        )
        for query, title in [
            ("charger for iphone 15", "Anker 20W Charger, Lightning"),
            ("usb-c charger for a long trip with a laptop", "Anker 65W Charger"),
        ]
    ]
    batch = {k: torch.tensor(v) for k, v in pad_batch([vars(e) for e in examples], pad_id=0).items()}
    assert label_window_start(batch["labels"]) > 10  # the prompts are most of each row

    def run(window: bool) -> dict:
        model.zero_grad()
        if window:
            logits, labels = labelled_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"]
        loss, count = masked_token_nll(logits, labels)
        loss.backward()
        return {
            "loss": float(loss),
            "count": int(count),
            "grads": [p.grad.clone() for p in model.parameters()],
            "sequence_logprobs": sequence_logprobs(logits, labels).detach(),
        }

    whole, window = run(window=False), run(window=True)
    assert whole["count"] == window["count"] == sum(e.num_response_tokens for e in examples)
    assert window["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    for expected, got in zip(whole["grads"], window["grads"]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(window["sequence_logprobs"], whole["sequence_logprobs"], rtol=1e-5, atol=1e-4)


def test_retrieval_finds_the_fact_a_knowledge_query_needs():
    # In a process of its own: bm25s loads numba/llvmlite, after which no in-process vLLM engine
    # may start in this pytest process (taosr.actors.runtime.check_in_process_engine).
    code = (
        "from taosr.datasets.retrieval import RuleRetriever\n"
        "r = RuleRetriever()\n"
        "print(r.retrieve(['charger for iphone 15 Anker Fast Wall Charger connector Lightning'], k=4)[0])\n"
        "print(r.retrieve(['cheaper alternative to dyson airwrap hair styler'], k=3)[0])"
    )
    knowledge, alternative = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()
    )
    assert "KN-01" in knowledge and "REF-01" in alternative


def test_user_rule_files_load_or_fail_clearly(tmp_path):
    path = tmp_path / "rules.jsonl"
    path.write_text('{"id": "R1", "text": "Refurbished items never match a query for new items."}\n')
    assert list(load_rules(str(path))) == ["R1"]
    path.write_text('{"id": "R1"}\n')
    with pytest.raises(ValueError, match="rules.jsonl:1"):
        load_rules(str(path))
    assert load_rules("") == RULES


def test_rule_teacher_rationales_parse_and_agree_with_gold():
    rows = generate_rows(300, seed=9)
    for row in rows:
        row["step_annotations"] = json.dumps(row["step_annotations"])
    teacher = RuleTeacher(RULES)
    texts = teacher.write(rows, [["CAT-01"]] * len(rows))
    for row, text in zip(rows, texts):
        reasoning, drop = judge_rationale(text, row["label"])
        assert drop is None and reasoning.decision == row["label"]
    # Logs without a trace get a label-conditioned template that still parses and agrees.
    bare = [dict(row, step_annotations=None) for row in rows[:20]]
    for row, text in zip(bare, teacher.write(bare, [["NEG-01"]] * 20)):
        assert judge_rationale(text, row["label"])[1] is None


def test_judge_rationale_drops_wrong_and_broken_steps():
    good = "\n".join(REASONING.step_lines())
    assert judge_rationale("Sure! Here you go:\n" + good, 2)[0] == REASONING
    assert judge_rationale(good, 4) == (None, "disagrees_with_gold")
    assert judge_rationale("1. Query: x\n2. Item: y", 2) == (None, "unparseable")
    assert judge_rationale(None, 2) == (None, "teacher_error")


@pytest.fixture()
def openai_server():
    """A real OpenAI-compatible HTTP endpoint on 127.0.0.1 that fails once with 503."""
    import socket

    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    calls = {"n": 0}

    @app.post("/v1/chat/completions")
    def complete(body: dict):
        calls["n"] += 1
        if calls["n"] == 1:
            return JSONResponse({"error": "busy"}, status_code=503)
        if body["model"] == "locked":
            return JSONResponse({"error": "invalid api key"}, status_code=401)
        label = body["messages"][-1]["content"].rsplit("Label: ", 1)[1]
        decision = label if "Mismatch" in label else "1-Irrelevant"  # wrong for any other gold label
        text = "\n".join(REASONING.step_lines()[:4] + [f"5. Decision: {decision}"])
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", calls
    server.should_exit = True
    thread.join(timeout=5)


def test_openai_teacher_over_http_with_a_retry(openai_server):
    from taosr.datasets.cot import OpenAITeacher

    url, calls = openai_server
    teacher = OpenAITeacher(RULES, url, "teacher-model")
    rows = [
        {"query": "charger for iphone 15", "title": "Anker Charger", "label": 2},
        {"query": "charger for iphone 15", "title": "Anker USB-C Charger", "label": 4},
    ]
    texts = teacher.write(rows, [["KN-01"], ["KN-01"]])
    assert calls["n"] == 3  # one 503, then one call per row
    assert judge_rationale(texts[0], 2)[1] is None
    assert judge_rationale(texts[1], 4)[1] == "disagrees_with_gold"


def test_a_refused_api_key_stops_the_teacher_with_the_cause(openai_server, monkeypatch):
    from taosr.datasets.cot import OpenAITeacher, TeacherRefused

    url, _ = openai_server
    monkeypatch.delenv("TAOSR_TEST_TEACHER_KEY", raising=False)
    teacher = OpenAITeacher(RULES, url, "locked", api_key_env="TAOSR_TEST_TEACHER_KEY")
    rows = [{"query": "charger for iphone 15", "title": "Anker Charger", "label": 2}] * 3
    with pytest.raises(TeacherRefused, match="401.*TAOSR_TEST_TEACHER_KEY set"):
        teacher.write(rows, [["KN-01"]] * 3)


def test_a_teacher_failing_on_too_many_rows_stops_the_stage():
    from taosr.datasets.cot import check_teacher_errors

    check_teacher_errors({"input": 100, "drop_reasons": {"teacher_error": 10, "unparseable": 50}}, 0.1)
    with pytest.raises(RuntimeError, match="failed on 11 of 100 rows"):
        check_teacher_errors({"input": 100, "drop_reasons": {"teacher_error": 11}}, 0.1)
    check_teacher_errors({"input": 0, "drop_reasons": {}}, 0.1)
