"""The log schema and per-row validation.

A log row describes one (query, item) judgement. Required: ``id``, ``query``, ``title``,
``label``. Optional: ``query_id``, ``item_id``, ``category`` (a path string or a list of
levels), ``attributes`` (a dict, a JSON object string, or a list of {key|name, value}),
``price``, ``description`` (HTML is stripped), ``query_type``, ``rule_ids``,
``step_annotations``. Columns we do not know are kept, as JSON, in ``extra``: nothing is lost.

``normalise_row`` either returns the clean row or raises ``RowError`` with a stable reason code
(``missing_field:title``, ``wrong_type:price``, ``unknown_label``, ``oversized_text:query``,
``bad_encoding:title``, ...); the Ray layer turns those into quarantine rows.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

from taosr.labels import parse_level
from taosr.limits import InputLimits
from taosr.text import clean_text

KNOWN_FIELDS = (
    "id",
    "query_id",
    "query",
    "item_id",
    "title",
    "category",
    "attributes",
    "price",
    "description",
    "label",
    "query_type",
    "rule_ids",
    "step_annotations",
)

# The columns of an accepted row, in order. Attributes, step annotations and unknown columns
# are JSON text so the Arrow schema is the same for every shop's logs.
ACCEPTED_COLUMNS = (*KNOWN_FIELDS, "extra", "source", "line")
QUARANTINE_COLUMNS = ("source", "line", "reason", "detail", "raw")

# A price as shops write it: an optional currency symbol or code on either side, then digits
# with ',' or '.' (or spaces, apostrophes) as thousands or decimal separators.
_PRICE_RE = re.compile(
    r"^\s*(?:[$€£¥₹]|[A-Za-z]{1,3}\$?)?\s*(?P<number>\d[\d.,' \u00a0]*)\s*(?:[$€£¥₹]|[A-Za-z]{1,4})?\s*$"
)


class RowError(ValueError):
    """A row that cannot be accepted; ``reason`` is a stable code used for counting."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


Limits = InputLimits  # the schema's name for the one definition in taosr.limits


def rename_columns(raw: Mapping[str, Any], columns: Mapping[str, str]) -> dict:
    """Apply a {our_name: their_name} column mapping to one raw row."""
    if not columns:
        return dict(raw)
    theirs_to_ours = {theirs: ours for ours, theirs in columns.items()}
    return {theirs_to_ours.get(key, key): value for key, value in raw.items()}


def normalise_row(
    raw: Mapping[str, Any],
    limits: Limits = Limits(),
    label_aliases: Mapping[str, int] | None = None,
    label_bins: Mapping[str, float] | None = None,
    require_label: bool = True,
) -> dict:
    """Validate and clean one raw row (already renamed to our field names).

    ``label_aliases`` map label spellings (text or numbers) to levels; ``label_bins`` map each
    level to the lowest graded score it takes ({"4": 2.75, "3": 2.25, "2": 1.5, "1": 1.0} for a
    mean rating on 1-3): a numeric label becomes the highest level whose bound it reaches, and
    the original grade is kept in ``extra`` as ``label_raw``. A price that is text but not a
    number is kept in ``extra`` as ``price_raw`` (the row is accepted without a price)."""
    if not isinstance(raw, Mapping):
        raise RowError("not_an_object", f"a row must be a JSON object, got {type(raw).__name__}")
    row: dict[str, Any] = {}
    row["id"] = _identifier(raw, "id", required=True)
    row["query_id"] = _identifier(raw, "query_id", required=False)
    row["item_id"] = _identifier(raw, "item_id", required=False)
    row["query"] = _text(raw, "query", limits.max_query_chars, required=True)
    row["title"] = _text(raw, "title", limits.max_title_chars, required=True)
    row["category"] = _category(raw.get("category"))
    row["attributes"] = json.dumps(_attributes(raw.get("attributes"), limits), ensure_ascii=False)
    unparsed: dict[str, Any] = {}
    try:
        row["price"] = _price(raw.get("price"))
    except _UnreadablePrice:
        row["price"] = None
        unparsed["price_raw"] = raw.get("price")
    row["description"] = _text(raw, "description", limits.max_description_chars, required=False)
    if require_label or not _missing(raw.get("label")):
        row["label"] = _label(raw.get("label"), label_aliases or {}, label_bins or {})
    else:
        row["label"] = None  # prediction on unlabelled logs
    if label_bins and _number(raw.get("label")) is not None and _alias(raw.get("label"), label_aliases or {}) is None:
        unparsed["label_raw"] = raw.get("label")
    query_type = _text(raw, "query_type", 64, required=False)
    row["query_type"] = re.sub(r"[\s-]+", "_", query_type.lower()) if query_type else "unknown"
    row["rule_ids"] = _string_list(raw.get("rule_ids"), "rule_ids")
    row["step_annotations"] = _json_object(raw.get("step_annotations"), "step_annotations")
    extra = {**{k: v for k, v in raw.items() if k not in KNOWN_FIELDS and not k.startswith("_")}, **unparsed}
    row["extra"] = json.dumps(extra, ensure_ascii=False, default=str) if extra else None
    return row


def _check_encoding(value: str, name: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RowError(f"bad_encoding:{name}", "text holds characters that are not valid UTF-8") from error
    return value


def _as_text(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RowError(f"bad_encoding:{name}", "bytes are not valid UTF-8") from error
    if not isinstance(value, str):
        raise RowError(f"wrong_type:{name}", f"expected text, got {type(value).__name__}")
    return _check_encoding(value, name)


def _text(raw: Mapping, name: str, max_chars: int, required: bool) -> str | None:
    value = raw.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise RowError(f"missing_field:{name}", f"'{name}' is required")
        return None
    text = clean_text(_as_text(value, name))
    if not text:
        if required:
            raise RowError(f"missing_field:{name}", f"'{name}' is empty after cleaning")
        return None
    if len(text) > max_chars:
        raise RowError(f"oversized_text:{name}", f"{len(text)} characters, limit {max_chars}")
    return text


def _identifier(raw: Mapping, name: str, required: bool) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise RowError(f"missing_field:{name}", f"'{name}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, bytes)):
        raise RowError(f"wrong_type:{name}", f"expected a string or integer id, got {type(value).__name__}")
    text = str(value) if isinstance(value, int) else _as_text(value, name).strip()
    if not text or len(text) > 256:
        raise RowError(f"wrong_type:{name}", "an id must have 1-256 characters")
    return text


def _category(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [clean_text(_as_text(part, "category")) for part in value if part is not None]
        text = " > ".join(part for part in parts if part)
    else:
        text = clean_text(_as_text(value, "category"))
    if len(text) > 512:
        raise RowError("oversized_text:category", f"{len(text)} characters, limit 512")
    return text or None


def _attributes(value: Any, limits: Limits) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, (str, bytes)):
        text = _as_text(value, "attributes").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise RowError("wrong_type:attributes", "a string must hold a JSON object") from error
    if isinstance(value, (list, tuple)):  # [{key|name: .., value: ..}] (Parquet map columns arrive as pairs)
        pairs = {}
        for entry in value:
            if isinstance(entry, Mapping) and "value" in entry and ("key" in entry or "name" in entry):
                pairs[entry.get("key", entry.get("name"))] = entry["value"]
            elif isinstance(entry, (list, tuple)) and len(entry) == 2:
                pairs[entry[0]] = entry[1]
            else:
                raise RowError("wrong_type:attributes", "a list must hold {key, value} pairs")
        value = pairs
    if not isinstance(value, Mapping):
        raise RowError("wrong_type:attributes", f"expected an object of key-value pairs, got {type(value).__name__}")
    if len(value) > limits.max_attributes:
        raise RowError("oversized_text:attributes", f"{len(value)} attributes, limit {limits.max_attributes}")
    clean: dict[str, str] = {}
    for key, item in value.items():
        if item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        if isinstance(item, (Mapping, list, tuple)):
            raise RowError("wrong_type:attributes", f"attribute {str(key)[:40]!r} must be a scalar")
        name = clean_text(_as_text(str(key) if not isinstance(key, (str, bytes)) else key, "attributes"))
        text = clean_text(_as_text(str(item) if not isinstance(item, (str, bytes)) else item, "attributes"))
        if len(name) > limits.max_attribute_chars or len(text) > limits.max_attribute_chars:
            raise RowError(
                "oversized_text:attributes", f"attribute {name[:40]!r} is longer than {limits.max_attribute_chars}"
            )
        if name and text:
            clean[name] = text
    return clean


class _UnreadablePrice(ValueError):
    """Price text that is not a number: the row is kept, the text moves to ``extra``."""


def parse_price_text(text: str) -> float:
    """'19.99', '$5', '1,299.00', '19,99 EUR', 'EUR 1.299,50', "1'299.00" -> a number; raises
    _UnreadablePrice otherwise. With both ',' and '.', the last one is the decimal mark; a lone
    ',' or '.' followed by exactly three digits separates thousands, else it is the decimal mark."""
    match = _PRICE_RE.match(text)
    if not match:
        raise _UnreadablePrice(text)
    number = re.sub(r"[' \u00a0]", "", match.group("number")).rstrip(".,")
    marks = [c for c in number if c in ",."]
    if len(set(marks)) == 2:
        decimal = number[max(number.rfind(","), number.rfind("."))]
        number = number.replace("," if decimal == "." else ".", "").replace(decimal, ".")
    elif marks:
        mark = marks[0]
        groups = number.split(mark)
        thousands = len(groups) > 2 or len(groups[-1]) == 3
        number = number.replace(mark, "") if thousands else number.replace(mark, ".")
    try:
        return float(number)
    except ValueError as error:
        raise _UnreadablePrice(text) from error


def _price(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError("wrong_type:price", "a boolean is not a price")
    if isinstance(value, (int, float)):
        price = float(value)
        if math.isnan(price):
            return None
    elif isinstance(value, str):
        if not value.strip():
            return None
        price = parse_price_text(value)
    else:
        raise RowError("wrong_type:price", f"expected a number, got {type(value).__name__}")
    if not math.isfinite(price) or price < 0:
        raise RowError("wrong_type:price", f"a price must be finite and non-negative, got {price}")
    return price


def _alias(value: Any, aliases: Mapping) -> int | None:
    """The level an alias gives ``value``: text is matched case-insensitively, numbers by their
    value (an alias key "5" matches 5, 5.0 and "5")."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    folded = {str(k).strip().lower(): v for k, v in aliases.items()}
    keys = [str(value).strip().lower()]
    number = _number(value)
    if number is not None and number.is_integer():
        keys.append(str(int(number)))
    for key in keys:
        if key in folded:
            return int(folded[key])
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _label(value: Any, aliases: Mapping, bins: Mapping | None = None) -> int:
    if _missing(value):
        raise RowError("missing_field:label", "'label' is required")
    alias = _alias(value, aliases)
    if alias is not None:
        try:
            return parse_level(alias)
        except ValueError as error:
            raise RowError("unknown_label", f"alias of {value!r} names no level: {error}"[:120]) from error
    if bins:
        grade = _number(value)
        if grade is None:
            raise RowError("unknown_label", f"{str(value)[:40]!r} is not a graded score for label_bins")
        reached = [int(level) for level, bound in bins.items() if grade >= float(bound)]
        if not reached:
            raise RowError("unknown_label", f"grade {grade} is below every bound of label_bins")
        return max(reached)
    try:
        return parse_level(value)
    except ValueError as error:
        raise RowError("unknown_label", str(error)[:120]) from error


def _string_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RowError(f"wrong_type:{name}", "expected a list of strings")
    return [_check_encoding(v, name) for v in value]


def _json_object(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise RowError(f"wrong_type:{name}", "a string must hold a JSON object") from error
    if not isinstance(value, Mapping):
        raise RowError(f"wrong_type:{name}", "expected an object")
    return json.dumps(value, ensure_ascii=False, default=str)
