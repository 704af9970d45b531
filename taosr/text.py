"""Cleaning of free text from shop logs: HTML, entities, control characters, odd whitespace."""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

_BLOCK_TAGS = {"br", "p", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol"}
_SKIP_TAGS = {"script", "style", "template", "noscript"}
_WHITESPACE_RE = re.compile(r"\s+")
_LOOKS_LIKE_HTML = re.compile(r"<[a-zA-Z/!][^>]*>|&[a-zA-Z#0-9]+;")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in _SKIP_TAGS and self._skip_depth:
            self._skip_depth -= 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self._skip_depth:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Visible text of an HTML fragment (scripts and styles dropped, entities decoded)."""
    if not _LOOKS_LIKE_HTML.search(text):
        return text
    collector = _TextCollector()
    collector.feed(text)
    collector.close()
    return html.unescape("".join(collector.parts))


def clean_text(text: str) -> str:
    """Normalise to NFC, strip HTML, drop control and format characters, collapse whitespace.

    Letters of every script are kept: logs come in many languages.
    """
    text = unicodedata.normalize("NFC", strip_html(text))
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\t\n\r" or category == "Zs":
            kept.append(" ")
        elif category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(char)
    return _WHITESPACE_RE.sub(" ", "".join(kept)).strip()
