"""The exported model's card: what the model is, what it was trained on, how good it is on the
held-out split with intervals against the lexical baseline and SFT, the decision rule it serves
with, its known limits and the config that made it. The export stage writes it as
export/MODEL_CARD.md and as the Hugging Face folder's README.md, so a tool that opens the folder
shows it. Built from a run folder's files alone (a local copy of them for an s3:// run)."""

from __future__ import annotations

import json
from pathlib import Path

from taosr.differences import difference_header, difference_row
from taosr.labels import LABEL_TEXT


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _predictions(run: Path, slug: str) -> dict[str, tuple[int, int]]:
    path = run / "eval" / slug / "predictions.jsonl"
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["id"]: (row["label"], row["pred"]) for row in rows}


def _stage_titles(run: Path) -> dict[str, str]:
    return {slug: title for slug, title in (_read_json(run / "eval" / "rows.json") or [])}


def quality_section(run: Path, stage: str, split: str, seed: int) -> str:
    """The eval stage's table and the exported stage's paired intervals against the lexical
    baseline and SFT; a line saying so when the eval stage has not scored the run."""
    table = run / "eval" / "stages.md"
    if not table.is_file():
        return "The eval stage has not scored this run: `taosr` reports no figures for this model yet.\n"
    titles = _stage_titles(run)
    lines = [
        f"Held-out `{split}` split, scored once by the first-token level distribution (plain argmax), "
        f"beside the lexical baseline (TF-IDF + logistic regression on the same training rows):\n",
        table.read_text().strip(),
        "",
    ]
    mine = _predictions(run, stage)
    rows = []
    for before in ("lexical", "sft"):
        theirs = _predictions(run, before)
        if before != stage and mine and theirs and mine.keys() & theirs.keys():
            label = f"{titles.get(before, before)} → {titles.get(stage, stage)} (this model)"
            rows.append(difference_row(label, theirs, mine, seed))
    if rows:
        lines += [
            "Paired-bootstrap 95% intervals on the same rows; beyond noise when the macro-F1 interval excludes 0:\n",
            *difference_header(),
            *rows,
            "",
        ]
    lines.append(
        f"These figures are one run (seed {seed}). A seed sweep (`pipeline --seeds 0,1,2`) gives their spread."
    )
    return "\n".join(lines) + "\n"


def decision_section(decision: dict | None) -> str:
    if not decision:
        return "No decision rule was recorded: serving uses the plain argmax of the level distribution.\n"
    text = (
        f"**{decision['described']}**, chosen on the `{decision['split']}` split ({decision['n']} rows) for "
        f"{decision['metric']}; the plain argmax is kept unless a rule beats it there beyond noise. Serving and batch "
        "prediction apply it.\n"
    )
    on_eval = decision.get("on_eval_split")
    if on_eval:
        rows = ["| rule | n | macro-F1 | accuracy | QWK |", "|---|---|---|---|---|"]
        shown = ["argmax"] if decision["described"] == "argmax" else ["argmax", "chosen"]
        for name in shown:
            metrics = on_eval[name]
            qwk = "–" if metrics.get("qwk") is None else f"{metrics['qwk']:.3f}"
            f1, accuracy = 100 * metrics["macro_f1"], 100 * metrics["accuracy"]
            rows.append(
                f"| {decision['described'] if name == 'chosen' else name} | {on_eval['n']} | {f1:.2f} | "
                f"{accuracy:.2f} | {qwk} |"
            )
        text += f"\nOn the `{on_eval['split']}` split:\n\n" + "\n".join(rows) + "\n"
    return text


def data_section(run: Path, source: str) -> str:
    counts = _read_json(run / "data" / "counts.json") or {}
    manifest = _read_json(run / "data" / "manifest.json") or {}
    lines = [f"- Logs: `{source}`"]
    if counts:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted((counts.get("reasons") or {}).items()))
        lines.append(
            f"- Rows: {counts.get('input', '–')} read, {counts.get('accepted', '–')} accepted, "
            f"{counts.get('quarantined', 0)} quarantined" + (f" ({reasons})" if reasons else "")
        )
    if manifest.get("output_hash"):
        lines.append(f"- Fingerprint of the accepted rows (the data stage's content hash): `{manifest['output_hash']}`")
    lines.append("- Split by query into train, val and test: no query is in two splits.")
    return "\n".join(lines) + "\n"


def genrm_line(run: Path) -> str:
    used = (_read_json(run / "srpo" / "summary.json") or {}).get("genrm")
    return f"- SRPO's step rewards: {used['reason']}.\n" if used else ""


def model_card(
    run: Path,
    stage: str,
    info: dict,
    decision: dict | None,
    config_yaml: str,
    *,
    base_model: str,
    source: str,
    split: str,
    seed: int,
) -> str:
    """The card's markdown for the model exported from ``stage`` of the run in ``run``."""
    title = _stage_titles(run).get(stage, stage)
    levels = ", ".join(LABEL_TEXT[level] for level in sorted(LABEL_TEXT, reverse=True))
    parts = [
        f"# taosr relevance model: {title}, seed {seed}\n",
        "A search-relevance judge for e-commerce logs. Given a query and an item, it answers a relevance "
        f"level ({levels}) and then its five-step reasoning (post-CoT: the label comes first). The endpoint and "
        "batch prediction read the level distribution of the first answer token and apply the decision rule below; "
        "the reasoning is decoded only when asked for.\n",
        "## Model\n",
        "| field | value |\n|---|---|",
        f"| base model | `{base_model}` |",
        f"| trained from | `{info.get('base_model', '–')}` (the model the exported stage started from) |",
        f"| exported stage | `{stage}` ({title}) |",
        f"| response format | `{info.get('format', '–')}`, prompt version {info.get('prompt_version', '–')} |",
        f"| chat template fingerprint | `{info.get('template_fingerprint', '–')}` |",
        "",
        "## Data\n",
        data_section(run, source),
        "## How good it is\n",
        quality_section(run, stage, split, seed),
        "## Decision rule\n",
        decision_section(decision),
        "## Known limits\n",
        "- It judges the shop, language and label scale of its training logs; on another shop, measure it first "
        "(`python -m taosr.ray_jobs.predict` on labelled rows writes metrics.json).\n"
        "- Only the first token decides the level; the reasoning after it is not checked at serving time.\n"
        "- The figures above rest on the rows of one held-out split and one seed; read them with their intervals.\n"
        + genrm_line(run),
        "## The config that made it\n",
        "```yaml\n" + config_yaml.rstrip() + "\n```\n",
    ]
    return "\n".join(parts)
