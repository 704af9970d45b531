"""Request validation for the relevance endpoint: types and unknown fields by pydantic, limits
and hostile text by hand, each failure a 4xx with a message that names the field."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from taosr.limits import InputLimits


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    title: StrictStr
    category: Optional[StrictStr] = None
    attributes: Optional[dict[StrictStr, StrictStr]] = None
    price: Optional[StrictFloat | StrictInt] = Field(default=None, ge=0)
    description: Optional[StrictStr] = None


class RelevanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr
    items: list[ItemIn]
    explain: StrictBool = False


@dataclass(frozen=True)
class RequestLimits(InputLimits):
    """The text limits of a logged row (``taosr.limits``), plus what only a request has."""

    max_body_bytes: int = 1_000_000
    max_items: int = 500
    max_explain_items: int = 4


class RequestError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request(body: bytes, limits: RequestLimits) -> RelevanceRequest:
    """Bytes in, a validated request out, or RequestError(4xx, message)."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"request body is not valid UTF-8 (byte {error.start})") from error
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestError(
            400, f"request body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from error
    except RecursionError as error:  # json.loads recurses: a body of a million '[' must be a 400, not a 500
        raise RequestError(400, "request body nests too deeply to be a relevance request") from error
    if not isinstance(payload, dict):
        raise RequestError(422, "request body must be a JSON object with 'query' and 'items'")
    try:
        request = RelevanceRequest.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(422, f"{where}: {first['msg']}") from error
    _check_limits(request, limits)
    return request


def _check_limits(request: RelevanceRequest, limits: RequestLimits) -> None:
    _check_text("query", request.query, limits.max_query_chars)
    if not request.items:
        raise RequestError(422, "items: the list is empty; send at least one item")
    if len(request.items) > limits.max_items:
        raise RequestError(422, f"items: {len(request.items)} items; the limit is {limits.max_items} per request")
    ids = set()
    for index, item in enumerate(request.items):
        where = f"items.{index}"
        _check_text(f"{where}.id", item.id, 256)
        if item.id in ids:
            raise RequestError(422, f"{where}.id: duplicate id {item.id!r}")
        ids.add(item.id)
        _check_text(f"{where}.title", item.title, limits.max_title_chars)
        if item.category is not None:
            _check_text(f"{where}.category", item.category, limits.max_attribute_chars, allow_empty=True)
        attributes = item.attributes or {}
        if len(attributes) > limits.max_attributes:
            raise RequestError(
                422, f"{where}.attributes: {len(attributes)} entries; the limit is {limits.max_attributes}"
            )
        for key, value in attributes.items():
            _check_text(f"{where}.attributes key", key, limits.max_attribute_chars)
            _check_text(f"{where}.attributes.{key[:40]}", value, limits.max_attribute_chars, allow_empty=True)
        if item.description is not None:
            _check_text(f"{where}.description", item.description, limits.max_description_chars, allow_empty=True)
        if item.price is not None and item.price != item.price:
            raise RequestError(422, f"{where}.price: not a number")


def _check_text(where: str, value: str, max_chars: int, allow_empty: bool = False) -> None:
    if not allow_empty and not value.strip():
        raise RequestError(422, f"{where}: must not be empty")
    if len(value) > max_chars:
        raise RequestError(422, f"{where}: {len(value)} characters; the limit is {max_chars}")
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise RequestError(400, f"{where}: contains an unpaired surrogate (not valid Unicode text)")
        if (category == "Cc" and char not in "\t\n\r") or char in _BIDI_CONTROLS:
            raise RequestError(422, f"{where}: contains control character U+{ord(char):04X}")


# Bidirectional overrides can make text display differently from what the model reads.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
