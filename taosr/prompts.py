"""Prompt building. Instructions and the query come first and the item last, so every item of
one request shares the longest possible prefix and the engine's prefix cache reuses it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Mapping

from taosr.formats import ResponseFormat

PROMPT_VERSION = "taosr-prompt-v3"

# One short instruction: the prompt is most of every training sequence, so each of its tokens is
# paid for on every example and every served item (on the 2-core box a full-model SFT step costs
# about 2.4 ms per token it reads). v1's level definitions were ~95 tokens
# and v2's instruction and "Item:" header ~26 more; a fine-tuned model learns the levels from the
# labels, not from their definitions. The same reasoning caps the description.
_FORMAT_HINT = {
    ResponseFormat.POST_COT: "Level, then five reasoning steps.",
    ResponseFormat.PRE_COT: "Five reasoning steps, then 'Answer: <level>'.",
    ResponseFormat.LABEL_ONLY: "Level only.",
}

SYSTEM_PROMPT = "Item relevance to the query, 4 (exact) to 1 (irrelevant)."

MAX_DESCRIPTION_CHARS = 120  # of the cleaned description shown to the model, cut at a word


@dataclass(frozen=True)
class Item:
    """The item fields the model sees. Every field but the title is optional."""

    title: str
    category: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    price: float | None = None
    description: str | None = None


def render_item(item: Item, max_description_chars: int = MAX_DESCRIPTION_CHARS) -> str:
    lines = [f"Title: {item.title}"]
    if item.category:
        lines.append(f"Category: {item.category}")
    unstated = {key: value for key, value in item.attributes.items() if not states(item.title, value)}
    if unstated:
        pairs = "; ".join(f"{key}: {value}" for key, value in unstated.items())
        lines.append(f"Attributes: {pairs}")
    if item.price is not None:
        lines.append(f"Price: {item.price:.2f}")
    if item.description:
        text = item.description
        if len(text) > max_description_chars:
            text = text[:max_description_chars].rsplit(" ", 1)[0] + " …"
        lines.append(f"Description: {text}")
    return "\n".join(lines)


def states(title: str, value) -> bool:
    """Whether the title already states an attribute's value, as whole words (case aside).

    Shops put brand, colour, size and capacity in the title; repeating them as attributes cost
    20 of the built-in logs' 120 prompt tokens and told the model nothing new."""
    text = str(value).strip()
    return bool(text) and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", title, re.IGNORECASE) is not None


def build_messages(query: str, item: Item, fmt: ResponseFormat | str = ResponseFormat.POST_COT) -> list[dict]:
    """Chat messages for one (query, item): system instructions, then the query, then the item."""
    fmt = ResponseFormat(fmt)
    system = f"{SYSTEM_PROMPT} {_FORMAT_HINT[fmt]}"
    user = f"Query: {query}\n{render_item(item)}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_prompt(tokenizer, query: str, item: Item, fmt: ResponseFormat | str = ResponseFormat.POST_COT) -> str:
    """The prompt text, through the tokenizer's own chat template, ending where the answer starts."""
    return tokenizer.apply_chat_template(build_messages(query, item, fmt), tokenize=False, add_generation_prompt=True)


def template_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the prompt tokens: our template version and the
    tokenizer's chat template and vocabulary. Export writes it; serving refuses a mismatch."""
    digest = hashlib.sha256()
    digest.update(PROMPT_VERSION.encode())
    digest.update(SYSTEM_PROMPT.encode())
    digest.update((tokenizer.chat_template or "").encode())
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        digest.update(f"{index}:{token}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


PROMPT_COLUMNS = ("query", "title", "category", "attributes", "price", "description")  # what a prompt reads of a row


def item_from_row(row: Mapping) -> Item:
    """The model-facing item of an accepted log row (attributes arrive as JSON text)."""
    attributes = row.get("attributes") or {}
    if isinstance(attributes, str):
        import json

        attributes = json.loads(attributes)
    price = present(row.get("price"))
    return Item(
        title=row["title"],
        category=present(row.get("category")),
        # Ray Data turns dict attributes into a struct of every row's keys, the missing ones None.
        attributes={key: value for key, value in dict(attributes).items() if value is not None},
        price=None if price is None else float(price),
        description=present(row.get("description")),
    )


def present(value):
    """``value``, or None where it is missing: None, or the NaN that numpy and pandas batches
    put in a column's empty cells (a float where the prompt expects text)."""
    return None if value is None or (isinstance(value, float) and value != value) else value


TEACHER_INSTRUCTIONS = (
    "You write the reasoning behind a known relevance label for an e-commerce search result.\n"
    "Write exactly five lines and nothing else:\n"
    "1. Query: <what the query asks for: product type, required attributes, negations, intent>\n"
    "2. Item: <what the item is: product type, key attributes>\n"
    "3. Category: <match|partial|mismatch> — <reason>\n"
    "4. Attributes: <match|partial|violated|unknown> — <which attribute, and why>\n"
    "5. Decision: <the label given below>\n"
    "Ground the reasoning in the business rules given."
)


def teacher_messages(query: str, item: Item, rule_texts: list[str], gold_label_text: str) -> list[dict]:
    """Chat messages asking a teacher LLM for the five steps that justify ``gold_label_text``."""
    rules = "\n".join(f"- {text}" for text in rule_texts) or "- (no rule retrieved)"
    user = f"Business rules:\n{rules}\n\nQuery: {query}\n\nItem:\n{render_item(item)}\n\nLabel: {gold_label_text}"
    return [{"role": "system", "content": TEACHER_INSTRUCTIONS}, {"role": "user", "content": user}]
