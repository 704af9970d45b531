"""Model names from the config resolved to local folders, the embedded test model included.

'tiny' (a random two-layer Qwen2, for tests) has a tokenizer trained on the built-in
generator's text, which lives in this layer, so it is built here; every other name resolves in
``taosr.models.resolve_model``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from taosr import models


def resolve_model(name: str, cache_dir: str = "~/.cache/taosr/models") -> str:
    """A local Hugging Face folder for a model name from the config (``model.name``)."""
    if name == "tiny":
        return str(
            models.build_tiny_model(Path(os.path.expanduser(cache_dir)) / models.TINY_FOLDER, tokenizer_corpus(0))
        )
    return models.resolve_model(name, cache_dir)


def tokenizer_corpus(seed: int, rows: int = 600) -> Iterator[str]:
    """The text a model sees on the built-in logs: prompts of generated rows and their responses."""
    from taosr.datasets.synthetic import generate_rows
    from taosr.formats import Reasoning, ResponseFormat, render
    from taosr.prompts import Item, build_messages

    for row in generate_rows(rows, seed=seed):
        item = Item(title=row["title"], category=row["category"], attributes=row["attributes"], price=row["price"])
        for message in build_messages(row["query"], item):
            yield message["content"]
        yield render(ResponseFormat.POST_COT, row["label"], Reasoning(**row["step_annotations"]))
