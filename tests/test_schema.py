import json

import pytest

from taosr.datasets.schema import Limits, RowError, normalise_row, rename_columns
from taosr.text import clean_text

ALIASES = {"E": 4, "S": 3, "C": 2, "I": 1}


def row(**changes):
    base = {"id": "r1", "query": "phone case not pink", "title": "Spigen Case for iPhone 15, black", "label": 4}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def reason_of(raw, **kwargs):
    with pytest.raises(RowError) as caught:
        normalise_row(raw, **kwargs)
    return caught.value.reason


def test_minimal_row_is_accepted_with_defaults():
    out = normalise_row(row())
    assert out["label"] == 4 and out["query_type"] == "unknown"
    assert out["attributes"] == "{}" and out["price"] is None and out["extra"] is None


def test_html_entities_control_characters_and_other_scripts():
    out = normalise_row(
        row(
            title="<b>Coque</b> pour iPhone&nbsp;15 \u200b— <script>x()</script>rose",
            description="<p>Funda de silicona</p><ul><li>Color: rosa</li></ul>",
            query="手机壳 不要粉色\x07",
        )
    )
    assert out["title"] == "Coque pour iPhone 15 — rose"
    assert out["description"] == "Funda de silicona Color: rosa"
    assert out["query"] == "手机壳 不要粉色"


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ({"color": "pink", "size": 10, "empty": None}, {"color": "pink", "size": "10"}),
        ('{"color": "pink"}', {"color": "pink"}),
        ([{"key": "color", "value": "pink"}, {"name": "brand", "value": "ESR"}], {"color": "pink", "brand": "ESR"}),
        ([["color", "pink"]], {"color": "pink"}),
        (None, {}),
    ],
)
def test_attribute_shapes_from_different_shops(attributes, expected):
    assert json.loads(normalise_row(row(attributes=attributes))["attributes"]) == expected


@pytest.mark.parametrize(
    "price, expected",
    [
        (19.99, 19.99),
        ("19.99", 19.99),
        ("$ 5", 5.0),
        (0, 0.0),
        (None, None),
        ("", None),
        ("1,299.00", 1299.0),
        ("19,99 EUR", 19.99),
        ("EUR 1.299,50", 1299.5),
        ("1'299.00", 1299.0),
        ("€12", 12.0),
        ("19.99 USD", 19.99),
        ("1,299", 1299.0),
        ("12,5", 12.5),
    ],
)
def test_prices_as_shops_write_them(price, expected):
    assert normalise_row(row(price=price))["price"] == expected


def test_price_text_that_is_no_number_moves_to_extra_and_the_row_is_kept():
    out = normalise_row(row(price="call for price"))
    assert out["price"] is None and json.loads(out["extra"]) == {"price_raw": "call for price"}


@pytest.mark.parametrize(
    "label, level", [(3.0, 4), ("2.75", 4), (2.67, 3), ("2.25", 3), (2.0, 2), (1.5, 2), (1.33, 1), (1, 1)]
)
def test_graded_labels_are_binned_and_the_grade_kept(label, level):
    bins = {"4": 2.75, "3": 2.25, "2": 1.5, "1": 1.0}
    out = normalise_row(row(label=label), label_bins=bins)
    assert out["label"] == level and json.loads(out["extra"])["label_raw"] == label


def test_a_grade_below_every_bin_or_not_a_number_is_quarantined():
    bins = {"4": 2.75, "3": 2.25, "2": 1.5, "1": 1.0}
    assert reason_of(row(label=0.5), label_bins=bins) == "unknown_label"
    assert reason_of(row(label="great"), label_bins=bins) == "unknown_label"


def test_integer_label_aliases_apply_to_numbers_and_numeric_text():
    aliases = {5: 4, "0": 1}
    assert normalise_row(row(label=5), label_aliases=aliases)["label"] == 4
    assert normalise_row(row(label="5"), label_aliases=aliases)["label"] == 4
    assert normalise_row(row(label=0.0), label_aliases=aliases)["label"] == 1
    assert normalise_row(row(label=3), label_aliases=aliases)["label"] == 3  # no alias: a level as it is


def test_labels_are_optional_only_when_asked():
    assert normalise_row(row(label=...), require_label=False)["label"] is None
    assert reason_of(row(label=...)) == "missing_field:label"


@pytest.mark.parametrize("label, level", [("E", 4), ("s", 3), ("2-Mismatch", 2), (1, 1)])
def test_label_aliases(label, level):
    assert normalise_row(row(label=label), label_aliases=ALIASES)["label"] == level


@pytest.mark.parametrize(
    "raw, reason",
    [
        (row(id=...), "missing_field:id"),
        (row(query="   "), "missing_field:query"),
        (row(title=None), "missing_field:title"),
        (row(title="<br/>"), "missing_field:title"),
        (row(label=...), "missing_field:label"),
        (row(label="X"), "unknown_label"),
        (row(label=7), "unknown_label"),
        (row(price=-1), "wrong_type:price"),
        (row(price=True), "wrong_type:price"),
        (row(title=123), "wrong_type:title"),
        (row(attributes="not json"), "wrong_type:attributes"),
        (row(attributes={"a": {"nested": 1}}), "wrong_type:attributes"),
        (row(id={"x": 1}), "wrong_type:id"),
        (row(query="x" * 600), "oversized_text:query"),
        (row(attributes={f"k{i}": "v" for i in range(70)}), "oversized_text:attributes"),
        (row(title="bad \ud800 surrogate"), "bad_encoding:title"),
        (row(title=b"\xff\xfe"), "bad_encoding:title"),
        (["not", "an", "object"], "not_an_object"),
    ],
)
def test_bad_rows_get_a_stable_reason(raw, reason):
    assert reason_of(raw, label_aliases=ALIASES, limits=Limits()) == reason


def test_unknown_columns_are_kept_not_lost():
    out = normalise_row(row(locale="de", clicks=3))
    assert json.loads(out["extra"]) == {"locale": "de", "clicks": 3}


def test_column_mapping():
    raw = {"example_id": 7, "search_term": "q", "product_title": "t", "esci_label": "E"}
    mapped = rename_columns(
        raw, {"id": "example_id", "query": "search_term", "title": "product_title", "label": "esci_label"}
    )
    assert normalise_row(mapped, label_aliases=ALIASES)["id"] == "7"


def test_clean_text_leaves_plain_text_alone():
    assert clean_text("a < b and c > d") == "a < b and c > d"
