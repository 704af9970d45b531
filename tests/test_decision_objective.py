"""SFT's decision-weighted objective, the metrics it is judged by (QWK, Spearman), its
validation scorer and the lexical baseline: hand-checked numbers."""

import math

import numpy as np
import pytest
import torch

from taosr.first_token import first_token_scores, validation_metrics
from taosr.formats import Reasoning, ResponseFormat, decision_offset, render
from taosr.lexical import LexicalBaseline
from taosr.losses import decision_weighted_nll, masked_token_nll
from taosr.metrics import classification_metrics, expected_level, quadratic_weighted_kappa, spearman
from taosr.prompts import Item, build_prompt
from taosr.training.sft_objective import class_weights
from taosr.sft_examples import IGNORE_INDEX, tokenize_example

REASONING = Reasoning(
    "a charger for the iphone 15",
    "an Anker charger (connector Lightning)",
    "match",
    "a charger, as asked",
    "violated",
    "Lightning, but the query needs USB-C",
    2,
)


def _two_token_case():
    # Column 1 (target 0) is the decision, column 2 (target 1) a reasoning token.
    # Position 0's logits [0, 0] give P(0) = 1/2; position 1's [ln 3, 0] give P(1) = 1/4.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, 0, 1]])
    return logits, labels, torch.tensor([1])


def test_decision_weight_value_and_gradient_by_hand():
    logits, labels, decision = _two_token_case()
    loss, parts = decision_weighted_nll(logits, labels, decision, decision_weight=0.8)
    assert parts["decision_nll"].item() == pytest.approx(math.log(2))
    assert parts["rest_nll"].item() == pytest.approx(math.log(4))
    assert loss.item() == pytest.approx(0.8 * math.log(2) + 0.2 * math.log(4))
    loss.backward()
    # d/dz of w * CE = w * (softmax - onehot): position 0 carries the decision, position 1 the rest.
    assert logits.grad[0, 0].tolist() == pytest.approx([0.8 * (0.5 - 1), 0.8 * 0.5])
    assert logits.grad[0, 1].tolist() == pytest.approx([0.2 * 0.75, 0.2 * (0.25 - 1)])
    assert logits.grad[0, 2].tolist() == pytest.approx([0.0, 0.0])


def test_decision_weight_zero_is_the_plain_token_mean_and_one_is_the_decision_alone():
    logits, labels, decision = _two_token_case()
    plain, _ = masked_token_nll(logits, labels)
    assert decision_weighted_nll(logits, labels, decision, 0.0)[0].item() == pytest.approx(plain.item())
    assert decision_weighted_nll(logits, labels, decision, 1.0)[0].item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="share"):
        decision_weighted_nll(logits, labels, decision, 1.5)


def test_example_weights_average_the_decision_term_and_missing_decisions_are_skipped():
    # Three rows, decision at column 1: NLLs ln 2, ln 4 and (row 3 has none: index -1).
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.0, math.log(3.0)], [0.0, 0.0]], [[5.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 0], [IGNORE_INDEX, 0], [IGNORE_INDEX, 0]])
    loss, parts = decision_weighted_nll(logits, labels, torch.tensor([1, 1, -1]), 1.0, torch.tensor([3.0, 1.0, 7.0]))
    assert parts["decision_nll"].item() == pytest.approx((3 * math.log(2) + math.log(4)) / 4)
    # Row 3's labelled token is not a decision, so it is the whole "rest".
    assert parts["rest_nll"].item() == pytest.approx(math.log(1 + math.exp(-5.0)))


def test_a_decision_index_on_an_unlabelled_token_is_refused():
    logits, labels, _ = _two_token_case()
    with pytest.raises(ValueError, match="carries no label"):
        decision_weighted_nll(logits, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1]]), torch.tensor([1]), 0.5)


def test_class_weights_are_inverse_frequency_with_mean_one():
    levels = [4, 4, 4, 2]
    weights = class_weights(levels, 1.0)
    assert weights[2] == pytest.approx(3 * weights[4])
    assert sum(weights[level] for level in levels) / len(levels) == pytest.approx(1.0)
    assert class_weights(levels, 0.0) == {4: 1.0, 2: 1.0}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("fmt", list(ResponseFormat))
def test_the_decision_index_points_at_the_level_digit_in_every_format(tokenizer, fmt):
    prompt = build_prompt(tokenizer, "charger for iphone 15", Item("Anker 20W Charger, Lightning"), fmt)
    response = render(fmt, 2, None if fmt is ResponseFormat.LABEL_ONLY else REASONING)
    example = tokenize_example(tokenizer, prompt, response, 1024, decision_char=decision_offset(fmt, response))
    digit = tokenizer.encode("2", add_special_tokens=False)[0]
    assert example.input_ids[example.decision_index] == digit
    assert example.labels[example.decision_index] == digit
    if fmt is ResponseFormat.PRE_COT:  # the answer is near the end, after the steps
        assert example.decision_index > len(example.input_ids) - 8
    else:
        assert example.decision_index == len(tokenizer.encode(prompt, add_special_tokens=False))


def test_a_pre_cot_answer_cut_off_has_no_decision(tokenizer):
    prompt = build_prompt(tokenizer, "q", Item("t"), ResponseFormat.PRE_COT)
    response = render(ResponseFormat.PRE_COT, 2, REASONING)
    n = len(tokenizer.encode(prompt, add_special_tokens=False))
    cut = tokenize_example(tokenizer, prompt, response, n + 10, decision_offset(ResponseFormat.PRE_COT, response))
    assert cut.decision_index == -1


def test_quadratic_weighted_kappa_by_hand():
    assert quadratic_weighted_kappa([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    # Observed: both pairs at the extreme weight 1; expected: half the mass off-diagonal -> 1 - 2/1.
    assert quadratic_weighted_kappa([1, 4], [4, 1]) == pytest.approx(-1.0)
    assert quadratic_weighted_kappa([1, 2, 4, 4], [4, 4, 4, 4]) == 0.0  # a constant answer earns nothing
    assert classification_metrics([1, 4], [4, 1])["qwk"] == pytest.approx(-1.0)


def test_spearman_and_expected_level():
    assert expected_level([0.0, 0.5, 0.0, 0.5]) == pytest.approx(3.0)
    assert spearman([0.1, 0.2, 0.3], [1, 2, 3]) == pytest.approx(1.0)
    assert spearman([0.3, 0.2, 0.1], [1, 2, 3]) == pytest.approx(-1.0)
    assert spearman([0.5, 0.5, 0.5], [1, 2, 3]) is None


def test_first_token_validation_reads_the_position_after_the_prompt(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    from taosr.models import level_token_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = level_token_ids(tokenizer)
    level_ids = [ids[level] for level in (1, 2, 3, 4)]
    short = tokenizer.encode(build_prompt(tokenizer, "q", Item("t")), add_special_tokens=False)
    long = tokenizer.encode(
        build_prompt(tokenizer, "a much longer query here", Item("a long title " * 5)), add_special_tokens=False
    )
    probs, logprobs = first_token_scores(model, [short, long], level_ids, pad_id=0)
    for prompt, row in zip((short, long), probs):  # left padding must not change a row's scores
        alone = model(input_ids=torch.tensor([prompt])).logits[0, -1, level_ids].float()
        assert row == pytest.approx(torch.softmax(alone, -1).detach().numpy(), abs=1e-5)
    metrics = validation_metrics(probs, logprobs, [4, 4])
    assert metrics["decision_nll"] == pytest.approx(float(-logprobs[:, 3].mean()))
    assert sum(metrics["predicted_levels"].values()) == 2


def test_lexical_baseline_learns_term_overlap():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]

    def rows(n):
        out = []
        for _ in range(n):
            query = " ".join(rng.choice(words, 2, replace=False))
            match = rng.random() < 0.5
            title = query + " extra" if match else " ".join(rng.choice(words, 3, replace=False))
            out.append({"query": query, "title": title, "label": 4 if match else 1})
        return out

    train, test = rows(400), rows(100)
    probs = LexicalBaseline().fit(train).predict_proba(test)
    assert probs.shape == (100, 4) and np.allclose(probs.sum(axis=1), 1.0)
    pred = [(1, 2, 3, 4)[i] for i in probs.argmax(axis=1)]
    assert classification_metrics([r["label"] for r in test], pred)["accuracy"] > 0.9


def test_lexical_baseline_does_not_depend_on_the_order_rows_arrive_in():
    import random

    from taosr.datasets.synthetic import generate_rows

    rows = generate_rows(1500, seed=0)
    train, test = rows[:1200], rows[1200:]
    shuffled = train[:]
    random.Random(1).shuffle(shuffled)
    assert np.array_equal(
        LexicalBaseline().fit(train).predict_proba(test), LexicalBaseline().fit(shuffled).predict_proba(test)
    )


def test_micro_batches_keep_every_full_batch_put_reasoning_rows_apart_and_hold_the_label_mix():
    import random

    import pyarrow as pa

    from taosr.training.trainer import stratified_micro_batches

    draw = random.Random(1)
    # A quarter of the rows train a whole response; prompt lengths follow the row's level.
    rows = []
    for i in range(37):
        level, reasoning = draw.randint(1, 4), draw.random() < 0.25
        prompt = 10 * level + draw.randint(0, 3)
        response = draw.randint(40, 60) if reasoning else 2
        rows.append(
            {
                "input_ids": list(range(prompt + response)),
                "labels": [-100] * prompt + [7] * response,
                "n": i,
                "level": level,
                "reasoning": reasoning,
            }
        )
    big = [pa.Table.from_pylist(rows[i : i + 16]) for i in range(0, 37, 16)]  # 16, 16 and a tail of 5
    chunks = list(stratified_micro_batches(big, 4, random.Random(0)))
    assert len(chunks) == 37 // 4 and all(len(c) == 4 for c in chunks)
    assert len({r["n"] for c in chunks for r in c}) == 4 * 9  # no row twice; only the tail's 5th row is dropped
    padded = sum(4 * max(len(r["input_ids"]) for r in c) for c in chunks)
    plain = sum(4 * max(len(r["input_ids"]) for r in rows[i : i + 4]) for i in range(0, 36, 4))
    assert padded < plain
    # A micro-batch mixes reasoning and decision-only rows only where a group's spare rows meet.
    assert sum(len({r["reasoning"] for r in c}) > 1 for c in chunks) <= 2
    again = list(stratified_micro_batches(big, 4, random.Random(0)))
    assert [[r["n"] for r in c] for c in again] == [[r["n"] for r in c] for c in chunks]
    # one micro-batch per input batch: the stream passes through unchanged
    single = [pa.Table.from_pylist(rows[i : i + 4]) for i in range(0, 36, 4)]
    assert [[r["n"] for r in c] for c in stratified_micro_batches(single, 4, random.Random(0))] == [
        [r["n"] for r in rows[i : i + 4]] for i in range(0, 36, 4)
    ]


def test_every_micro_batch_holds_the_label_mix_even_where_length_follows_the_label():
    """64 decision-only rows, levels 4/2/1 as 32/16/16, length rising with the level: each of
    the four micro-batches holds exactly 8/4/4. Sorted by length they would hold one level each
    (the defect behind tests/test_learns_the_decision.py)."""
    import collections
    import random

    import pyarrow as pa

    from taosr.training.trainer import stratified_micro_batches

    levels = [4] * 32 + [2] * 16 + [1] * 16
    random.Random(3).shuffle(levels)
    rows = [
        {"input_ids": [1] * (10 * level + 2), "labels": [-100] * 10 * level + [5, 6], "level": level, "n": i}
        for i, level in enumerate(levels)
    ]
    chunks = list(stratified_micro_batches([pa.Table.from_pylist(rows)], 16, random.Random(0)))
    assert len(chunks) == 4
    assert all(collections.Counter(r["level"] for r in c) == {4: 8, 2: 4, 1: 4} for c in chunks)
    assert sorted(r["n"] for c in chunks for r in c) == list(range(64))


def test_decision_only_examples_keep_the_level_token_alone(tokenizer):
    prompt = build_prompt(tokenizer, "charger for iphone 15", Item("Anker 20W Charger, Lightning"))
    response = render(ResponseFormat.POST_COT, 2, REASONING)
    short = tokenize_example(tokenizer, prompt, response, 1024, decision_char=0, decision_only=True)
    n = len(tokenizer.encode(prompt, add_special_tokens=False))
    assert len(short.input_ids) == n + 1 and short.decision_index == n and short.num_response_tokens == 1
    assert short.input_ids[n] == tokenizer.encode("2", add_special_tokens=False)[0]
    with pytest.raises(ValueError, match="level token first"):
        tokenize_example(
            tokenizer,
            prompt,
            render(ResponseFormat.PRE_COT, 2, REASONING),
            1024,
            decision_char=decision_offset(ResponseFormat.PRE_COT, render(ResponseFormat.PRE_COT, 2, REASONING)),
            decision_only=True,
        )


def test_the_reasoning_share_is_a_seeded_draw_per_row():
    from taosr.training.sft_data import carries_reasoning

    drawn = [carries_reasoning(f"row-{i}", 0, 0.3) for i in range(2000)]
    assert 0.26 < sum(drawn) / len(drawn) < 0.34
    assert drawn == [carries_reasoning(f"row-{i}", 0, 0.3) for i in range(2000)]
    assert all(carries_reasoning(f"row-{i}", 0, 1.0) for i in range(50))


def test_the_left_padded_sft_loss_equals_the_loss_of_each_row_alone(tiny_model, tokenizer):
    """The step loss pads on the left (so a decision-only row's vocabulary projection covers its
    last columns only). Its value and gradient must be those of the same loss taken over each row
    unpadded: a decision-only row next to a whole-response row and a shorter prompt."""
    from transformers import AutoModelForCausalLM

    from taosr.training.sft_objective import sft_step_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    response = render(ResponseFormat.POST_COT, 2, REASONING)
    rows = []
    for query, title, level, alone in (
        ("charger for iphone 15", "Anker 20W Charger, Lightning", 2, False),
        ("usb-c cable two metres braided", "Anker USB-C cable 2 m", 4, True),
        ("q", "t", 1, True),
    ):
        text = render(ResponseFormat.POST_COT, level, REASONING) if not alone else response.replace("2", str(level), 1)
        example = tokenize_example(
            tokenizer, build_prompt(tokenizer, query, Item(title)), text, 1024, decision_char=0, decision_only=alone
        )
        rows.append({**vars(example), "level": level})

    class Engine:  # what the loss reads of a DeepSpeed engine
        device = "cpu"

        def __call__(self, **kwargs):
            return model(**kwargs)

    weights = {"1": 2.0, "2": 0.5, "4": 1.0}
    loss_fn = sft_step_loss(decision_weight=0.7, level_weights=weights)
    loss, parts, tokens = loss_fn(Engine(), rows)
    loss.backward()
    batched = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    # The same objective by hand, one unpadded row at a time: weighted mean of the decision NLLs,
    # mean NLL over every other labelled token.
    decisions, rest = [], []
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        targets = torch.tensor(row["labels"][1:])
        for column, target in enumerate(targets.tolist()):
            if target == IGNORE_INDEX:
                continue
            nll = -logprobs[column, target]
            (decisions if column + 1 == row["decision_index"] else rest).append((nll, weights[str(row["level"])]))
    decision = sum(w * nll for nll, w in decisions) / sum(w for _, w in decisions)
    expected = 0.7 * decision + 0.3 * sum(nll for nll, _ in rest) / len(rest)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["decision_nll"].item() == pytest.approx(decision.item(), rel=1e-5)
    assert tokens == sum(len(row["input_ids"]) for row in rows)
    for got, want in zip(batched, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
