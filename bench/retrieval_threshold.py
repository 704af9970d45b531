"""How high must a rule's BM25 score be before the CoT teacher may cite it? (cot.min_rule_score)

On the built-in logs every row records the rules that decided its label (``rule_ids``), so the
precision of what retrieval returns can be counted at each threshold. On a real shop's logs the
built-in rules are about another catalogue, so any rule retrieved there is a false citation:
the share of rows that still get one is the cost of a threshold set too low.

    .venv/bin/python bench/retrieval_threshold.py --real /tmp/homedepot/train.csv --real-encoding latin-1 \
        --real-query search_term --real-title product_title

Writes bench/results/retrieval_threshold.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

from provenance import git_commit  # bench/, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THRESHOLDS = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000, help="built-in rows generated (seed 0)")
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--real", default="", help="a CSV of real logs whose rows must get no built-in rule")
    parser.add_argument("--real-encoding", default="utf-8")
    parser.add_argument("--real-query", default="query")
    parser.add_argument("--real-title", default="title")
    parser.add_argument("--real-rows", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval_threshold.json"))
    args = parser.parse_args(argv)

    from taosr.datasets.retrieval import RuleRetriever, retrieval_text
    from taosr.datasets.synthetic import generate_rows

    retriever = RuleRetriever()
    rows = generate_rows(args.rows, seed=0)
    scored = retriever.scored(
        [retrieval_text(r["query"], r["title"], r.get("category"), r.get("attributes") or {}) for r in rows], args.top_k
    )
    built_in = []
    for threshold in THRESHOLDS:
        returned = relevant = rows_with_rule = 0
        for row, hits in zip(rows, scored):
            kept = [rule for rule, score in hits if score > threshold]
            returned += len(kept)
            relevant += sum(rule in set(row["rule_ids"]) for rule in kept)
            rows_with_rule += bool(kept)
        built_in.append(
            {
                "threshold": threshold,
                "precision": relevant / returned if returned else None,
                "rules_per_row": returned / len(rows),
                "rows_with_a_rule": rows_with_rule / len(rows),
                "recall_of_fired_rules": relevant / sum(len(r["rule_ids"]) for r in rows),
            }
        )
    result = {
        "command": " ".join(sys.argv),
        "commit": git_commit(),
        "built_in_rows": len(rows),
        "top_k": args.top_k,
        "built_in": built_in,
    }
    if args.real:
        with open(args.real, encoding=args.real_encoding, newline="") as handle:
            real = list(csv.DictReader(handle))
        real = random.Random(0).sample(real, min(args.real_rows, len(real)))
        hits = retriever.scored(
            [retrieval_text(r[args.real_query], r[args.real_title], None, {}) for r in real], args.top_k
        )
        result["real"] = {
            "file": Path(args.real).name,
            "rows": len(real),
            "by_threshold": [
                {
                    "threshold": t,
                    "rows_with_a_rule": sum(any(s > t for _, s in h) for h in hits) / len(real),
                    "example": next(
                        (
                            (r[args.real_query], r[args.real_title], retriever.rules[h[0][0]].text)
                            for r, h in zip(real, hits)
                            if h and h[0][1] > t
                        ),
                        None,
                    ),
                }
                for t in THRESHOLDS
            ],
        }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
