"""The lexical baseline every run is measured against: TF-IDF + logistic regression.

A search team adopting an LLM relevance model must see whether it beats what a bag of words
already gets on their logs. The features are scikit-learn's: TF-IDF of word 1-2 grams over
"query || item text", plus how much of the query the item text covers (the share of query words
found in the title and in the whole item text, and the query's length). Trained on the training
split, scored on the same held-out split as the models, with the same metrics.
"""

from __future__ import annotations

import json
import re
from typing import Mapping, Sequence

import numpy as np

from taosr.metrics import LEVEL_ORDER

_WORD = re.compile(r"[a-z0-9]+")


def item_text(row: Mapping) -> str:
    """Title, category and attribute values of an accepted log row, as one string."""
    attributes = row.get("attributes") or {}
    if isinstance(attributes, str):
        attributes = json.loads(attributes) if attributes else {}
    parts = [row["title"], row.get("category") or "", " ".join(f"{k} {v}" for k, v in attributes.items())]
    return " ".join(p for p in parts if p)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def overlap_features(rows: Sequence[Mapping]) -> np.ndarray:
    """[n, 3]: share of query words in the title, share in the whole item text, log query length."""
    out = np.zeros((len(rows), 3))
    for i, row in enumerate(rows):
        query = _words(row["query"])
        if not query:
            continue
        out[i] = (
            len(query & _words(row["title"])) / len(query),
            len(query & _words(item_text(row))) / len(query),
            np.log1p(len(query)),
        )
    return out


class LexicalBaseline:
    """fit(rows) then predict_proba(rows) -> [n, 4] over levels 1-4 (0 for a level never seen)."""

    def __init__(self, seed: int = 0, class_weight: str | None = "balanced", max_features: int = 200_000):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=max_features)
        self.model = LogisticRegression(max_iter=2000, C=4.0, class_weight=class_weight, random_state=seed)

    def _features(self, rows: Sequence[Mapping], fit: bool = False):
        from scipy.sparse import csr_matrix, hstack

        texts = [f"{row['query']} || {item_text(row)}" for row in rows]
        tfidf = self.vectorizer.fit_transform(texts) if fit else self.vectorizer.transform(texts)
        return hstack([tfidf, csr_matrix(overlap_features(rows))]).tocsr()

    def fit(self, rows: Sequence[Mapping]) -> "LexicalBaseline":
        # A fixed row order: Ray Data hands rows back in no set order, and L-BFGS's sums follow
        # it, enough to flip a few borderline test rows from one run to the next.
        rows = sorted(rows, key=lambda row: (str(row.get("id", "")), row["query"], item_text(row), str(row["label"])))
        labels = [int(row["label"]) for row in rows]
        if len(set(labels)) < 2:
            raise ValueError(
                f"the lexical baseline needs at least two levels in its training rows; got {sorted(set(labels))}"
            )
        from threadpoolctl import threadpool_limits

        # One BLAS thread: L-BFGS's dot products round differently with 1 and 2 threads (a test
        # saw probabilities 0.006 apart and 2 of 600 answers flip), and a Ray worker, the driver
        # and a test do not run with the same thread count.
        with threadpool_limits(limits=1, user_api="blas"):
            self.model.fit(self._features(rows, fit=True), labels)
        return self

    def predict_proba(self, rows: Sequence[Mapping]) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            scores = self.model.predict_proba(self._features(rows))
        out = np.zeros((len(rows), len(LEVEL_ORDER)))
        for column, level in enumerate(self.model.classes_):
            out[:, LEVEL_ORDER.index(int(level))] = scores[:, column]
        return out
