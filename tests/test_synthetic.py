from collections import Counter

import pytest

from taosr.datasets.knowledge import RULES
from taosr.datasets.splits import assign_split
from taosr.datasets.synthetic import QUERY_TYPES, LogGenerator, generate_rows
from taosr.formats import Reasoning, ResponseFormat, parse, render


@pytest.fixture(scope="module")
def rows():
    return generate_rows(3000, seed=11)


def test_same_seed_same_rows_other_seed_other_rows(rows):
    assert generate_rows(300, seed=11) == rows[:300]
    assert generate_rows(300, seed=12) != rows[:300]


def test_knowledge_base_has_forty_plus_atomic_rules():
    assert len(RULES) >= 40
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id
        assert rule.text.endswith(".") and rule.text.count(". ") == 0, rule_id  # one sentence


def test_every_row_carries_its_trace_and_labels_come_from_the_rules(rows):
    for r in rows:
        assert r["rule_ids"] and all(rule in RULES for rule in r["rule_ids"])
        reasoning = Reasoning(**r["step_annotations"])
        assert reasoning.decision == r["label"]
        parsed = parse(ResponseFormat.POST_COT, render(ResponseFormat.POST_COT, r["label"], reasoning))
        assert parsed.format_ok and parsed.label == r["label"]
        assert r["title"].strip() and r["query"].strip()


def test_all_query_types_and_default_label_mix(rows):
    types = Counter(r["query_type"] for r in rows)
    assert set(types) == set(QUERY_TYPES)
    labels = Counter(r["label"] for r in rows)
    shares = {level: labels[level] / len(rows) for level in (4, 3, 2, 1)}
    # TaoSR1's test mix is 50 / 5 / 36 / 9
    assert shares[4] == pytest.approx(0.50, abs=0.04)
    assert shares[3] == pytest.approx(0.05, abs=0.02)
    assert shares[2] == pytest.approx(0.36, abs=0.04)
    assert shares[1] == pytest.approx(0.09, abs=0.03)


def test_configurable_label_mix():
    rows = generate_rows(1200, seed=2, label_mix={"4": 1, "3": 1, "2": 1, "1": 1})
    labels = Counter(r["label"] for r in rows)
    assert all(labels[level] / 1200 == pytest.approx(0.25, abs=0.07) for level in (4, 3, 2, 1))


def test_hard_query_examples_are_labelled_as_the_method_says(rows):
    negations = [r for r in rows if r["query_type"] == "negation" and "NEG-01" in r["rule_ids"]]
    assert negations and all(r["label"] == 2 for r in negations)
    originals = [r for r in rows if "ALT-02" in r["rule_ids"]]
    assert originals and all(r["label"] == 2 for r in originals)
    wrong_port = [r for r in rows if r["query_type"] == "knowledge" and "ATTR-01" in r["rule_ids"]]
    assert wrong_port and all(r["label"] == 2 for r in wrong_port)


def test_bad_mixes_are_rejected():
    with pytest.raises(ValueError):
        LogGenerator(label_mix={"5": 1})
    with pytest.raises(ValueError):
        LogGenerator(query_type_mix={"poetry": 1})
    with pytest.raises(ValueError):
        LogGenerator(label_mix={"4": -1, "3": 2})


def test_splits_are_by_query_and_deterministic(rows):
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    split_of = {}
    for r in rows:
        split = assign_split(r["query"], fractions, seed=0)
        assert split_of.setdefault(r["query"], split) == split
    assert assign_split("Phone  CASE", fractions) == assign_split("phone case", fractions)
    queries = [f"query {i}" for i in range(5000)]
    counts = Counter(assign_split(q, fractions, seed=1) for q in queries)
    assert counts["train"] / 5000 == pytest.approx(0.8, abs=0.03)
    assert counts["test"] / 5000 == pytest.approx(0.1, abs=0.02)
    assert [assign_split(q, fractions, seed=1) for q in queries[:50]] == [
        assign_split(q, fractions, seed=1) for q in queries[:50]
    ]
