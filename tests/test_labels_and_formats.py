import pytest

from taosr.formats import Reasoning, ResponseFormat, parse, render
from taosr.labels import label_text, parse_level, tier_of

REASONING = Reasoning(
    query="a phone case, colour not pink (negation)",
    item="a Spigen phone case (colour pink)",
    category_verdict="match",
    category_reason="the item is a phone case, as asked",
    attribute_verdict="violated",
    attribute_reason="colour is pink, which the query excludes",
    decision=2,
)


@pytest.mark.parametrize(
    "value, level",
    [
        (4, 4),
        ("3", 3),
        ("2-Mismatch", 2),
        ("1-irrelevant", 1),
        (" 4 - Excellent ", 4),
        ("related", 3),
        (2.0, 2),
    ],
)
def test_parse_level_accepts_the_spellings_of_a_level(value, level):
    assert parse_level(value) == level


@pytest.mark.parametrize("value", [0, 5, "5-Great", "E", True, 2.5, None, "", "43"])
def test_parse_level_rejects_everything_else(value):
    with pytest.raises(ValueError):
        parse_level(value)


def test_label_texts_and_tiers():
    assert [label_text(level) for level in (4, 3, 2, 1)] == ["4-Excellent", "3-Related", "2-Mismatch", "1-Irrelevant"]
    assert [tier_of(level) for level in (4, 3, 2, 1)] == ["Good", "Good", "Mid", "Bad"]


def test_post_cot_is_label_first_then_five_numbered_steps():
    text = render(ResponseFormat.POST_COT, 2, REASONING)
    lines = text.splitlines()
    assert lines[0] == "2-Mismatch"
    assert lines[3] == "3. Category: match — the item is a phone case, as asked"
    assert lines[4].startswith("4. Attributes: violated — ")
    assert lines[5] == "5. Decision: 2-Mismatch"
    assert len(lines) == 6


@pytest.mark.parametrize("fmt", list(ResponseFormat))
def test_render_then_parse_round_trips(fmt):
    parsed = parse(fmt, render(fmt, 2, REASONING))
    assert parsed.format_ok and parsed.label == 2
    if fmt is ResponseFormat.LABEL_ONLY:
        assert parsed.reasoning is None
    else:
        assert parsed.reasoning == REASONING
        assert parsed.hallucinated is False


def test_pre_cot_puts_the_answer_last():
    assert render(ResponseFormat.PRE_COT, 2, REASONING).splitlines()[-1] == "Answer: 2-Mismatch"


def test_hallucination_is_label_disagreeing_with_its_own_decision():
    text = render(ResponseFormat.POST_COT, 2, REASONING).replace("2-Mismatch", "4-Excellent", 1)
    parsed = parse(ResponseFormat.POST_COT, text)
    assert parsed.label == 4 and parsed.reasoning.decision == 2
    assert parsed.hallucinated is True and parsed.format_ok


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("Excellent!\n1. Query: x", "first line"),
        ("4-Excellent\n1. Query: x\n2. Item: y", "expected 5"),
        (
            "4-Excellent\n1. Query: a\n2. Item: b\n3. Category: great — c\n4. Attributes: match — d\n5. Decision: "
            "4-Excellent",
            "step 3 verdict",
        ),
        (
            "4-Excellent\n1. Query: a\n2. Item: b\n3. Category: match — c\n4. Attributes: match — d\n5. Decision: "
            "maybe",
            "step 5",
        ),
        (
            "4-Excellent\n1. Query: a\nItem: b\n3. Category: match — c\n4. Attributes: match — d\n5. Decision: 4",
            "step 2",
        ),
    ],
)
def test_broken_post_cot_responses_are_reported_not_raised(text, fragment):
    parsed = parse(ResponseFormat.POST_COT, text)
    assert not parsed.format_ok
    assert fragment in parsed.error
    assert parsed.hallucinated is None or parsed.reasoning is not None


def test_label_is_still_read_when_only_the_steps_are_broken():
    parsed = parse(ResponseFormat.POST_COT, "3-Related\nI think it is fine")
    assert parsed.label == 3 and parsed.reasoning is None and not parsed.format_ok


def test_reasoning_rejects_unknown_verdicts():
    with pytest.raises(ValueError):
        Reasoning("q", "i", "maybe", "r", "match", "r", 4)


def test_an_attribute_the_title_states_is_not_repeated():
    from taosr.prompts import Item, render_item

    item = Item(
        title="KEEN Mid Hiking Boots, Waterproof: no, Brown, Size 11",
        attributes={"brand": "KEEN", "color": "brown", "size": "11", "waterproof": "no", "insole": "foam"},
    )
    assert render_item(item) == "Title: KEEN Mid Hiking Boots, Waterproof: no, Brown, Size 11\nAttributes: insole: foam"
    # Whole words only: "no" inside "Nordic" or "noise" states nothing.
    quiet = Item(title="Nordic noise cancelling headphones", attributes={"noise_cancelling": "no", "brand": "Sony"})
    assert render_item(quiet).endswith("Attributes: noise_cancelling: no; brand: Sony")


def test_a_row_with_empty_cells_renders_as_an_item_without_those_fields():
    """Ray Data's numpy batches hold NaN where a log has no description, category or price
    (Home Depot's logs have titles alone); the prompt must leave those fields out, not fail."""
    from taosr.prompts import item_from_row, render_item

    nan = float("nan")
    row = {"title": "Behr 1 gal. white paint", "category": nan, "attributes": None, "price": nan, "description": nan}
    item = item_from_row(row)
    assert (item.category, item.price, item.description, dict(item.attributes)) == (None, None, None, {})
    assert render_item(item) == "Title: Behr 1 gal. white paint"
    full = item_from_row({**row, "category": "Paint", "price": 25.0, "description": "Interior flat."})
    assert (
        render_item(full)
        == "Title: Behr 1 gal. white paint\nCategory: Paint\nPrice: 25.00\nDescription: Interior flat."
    )
