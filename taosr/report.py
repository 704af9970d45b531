"""One run directory -> one report (report.md, report.html and PNG plots under <run_dir>/report/).

    taosr report runs/tiny

What it reads, all optional except the evaluation: eval/<stage>/metrics.json (the stage table,
per-class F1, per query type, confusion matrices), sample/pass_at_k.json (pass@k), each training
stage's metrics.jsonl (curves), dpo/pairs.json, export/beta/cumpt_sweep.json (the CumPT sweep),
serve/sample.json and every stage's manifest.json (timings). A missing part is left out of the
report and named under "Not in this run".
"""

from __future__ import annotations

import json
from pathlib import Path

from taosr.cumpt_sweep import plot_sweep
from taosr.differences import BOOTSTRAP_RESAMPLES, difference_header, difference_row
from taosr.report_plots import plot_confusions, plot_curves, plot_pass_at_k


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _unit(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _started_at(run: Path, stage: str) -> float:
    manifest = _read_json(run / stage / "manifest.json") or {}
    return manifest["finished_at"] - manifest.get("seconds", 0) if "finished_at" in manifest else float("inf")


def stage_rows(run: Path) -> dict[str, str]:
    """{slug: title} of the rows the eval stage scored, in its order (eval/rows.json, written from
    the stage registry). A run from before that file: every eval/<slug>/, the lexical baseline and
    the untrained base first, then the stages in the order they ran, titled by their slugs."""
    recorded = _read_json(run / "eval" / "rows.json")
    if recorded:
        return {slug: title for slug, title in recorded}
    found = [path.parent.name for path in (run / "eval").glob("*/metrics.json")]
    order = {slug: (slug != "lexical", slug != "base", _started_at(run, slug), slug) for slug in found}
    return {slug: slug for slug in sorted(found, key=lambda slug: order[slug])}


def stage_metrics(run: Path) -> dict[str, dict]:
    """{slug: eval metrics, with the row's "title"} for the stages evaluated in this run, in order."""
    found = {}
    for slug, title in stage_rows(run).items():
        metrics = _read_json(run / "eval" / slug / "metrics.json")
        if metrics is not None:
            found[slug] = {**metrics, "title": title}
    return found


def _titles(metrics: dict[str, dict]) -> dict[str, str]:
    return {slug: result.get("title", slug) for slug, result in metrics.items()}


def stage_table(metrics: dict[str, dict]) -> str:
    """docs/method.md section 8's layout (C1..C4 F1, macro-F1, accuracy) plus Good-F1, hallucination
    and format-error rates on the decoded sample, and n."""
    names = _titles(metrics)
    lines = [
        "| model | n | C1 F1 | C2 F1 | C3 F1 | C4 F1 | macro-F1 | acc | Good F1 | QWK | Spearman | halluc. | format "
        "err. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for slug, result in metrics.items():
        o = result["overall"]
        cells = [_pct(o.get(f"f1_{level}")) for level in (1, 2, 3, 4)]
        cells += [
            _pct(o.get("macro_f1")),
            _pct(o.get("accuracy")),
            _pct(o.get("good_f1")),
            _unit(o.get("qwk")),
            _unit(o.get("spearman")),
            _pct(o.get("hallucination_rate")),
            _pct(o.get("format_error_rate")),
        ]
        lines.append(f"| {names[slug]} | {o.get('n', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def query_type_table(metrics: dict[str, dict], key: str = "macro_f1") -> str:
    names = _titles(metrics)
    types = sorted({t for result in metrics.values() for t in result.get("by_query_type", {})})
    lines = [
        "| query type | n | " + " | ".join(names.get(s, s) for s in metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for query_type in types:
        rows = [result.get("by_query_type", {}).get(query_type, {}) for result in metrics.values()]
        n = next((row.get("n") for row in rows if row.get("n")), 0)
        lines.append(f"| {query_type} | {n} | " + " | ".join(_pct(row.get(key)) for row in rows) + " |")
    return "\n".join(lines)


def pass_at_k_table(pass_at_k: dict) -> str:
    ks = sorted(int(k.split("@")[1]) for k in pass_at_k["overall"] if k.startswith("pass@"))
    lines = ["| query type | prompts | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    groups = {
        "all": {"prompts": pass_at_k.get("prompts"), **pass_at_k["overall"]},
        **pass_at_k.get("by_query_type", {}),
    }
    for name, row in groups.items():
        lines.append(
            f"| {name} | {row.get('prompts') or ''} | " + " | ".join(_pct(row.get(f"pass@{k}")) for k in ks) + " |"
        )
    return "\n".join(lines)


def first_token_pass_table(metrics: dict[str, dict]) -> str:
    """Each stage's pass@k on the eval split from its first-token distribution (the same prompts
    for every stage): RL that sharpens the policy lifts pass@1 toward pass@k."""
    names = _titles(metrics)
    rows = {
        slug: result["overall"]["first_token_pass_at_k"]
        for slug, result in metrics.items()
        if result["overall"].get("first_token_pass_at_k")
    }
    if not rows:
        return ""
    ks = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(ks) + " |", "|---|" + "---|" * len(ks)]
    for slug, row in rows.items():
        lines.append(f"| {names[slug]} | " + " | ".join(_pct(row.get(k)) for k in ks) + " |")
    return "\n".join(lines)


def timings_table(run: Path) -> str:
    """Every stage that finished, in the order it started (from the manifests)."""
    import datetime

    finished = {path.parent.name: _read_json(path) for path in run.glob("*/manifest.json")}
    finished = {stage: m for stage, m in finished.items() if m and "finished_at" in m}
    lines = ["| stage | seconds | finished |", "|---|---|---|"]
    for stage in sorted(finished, key=lambda stage: (_started_at(run, stage), stage)):
        manifest = finished[stage]
        when = datetime.datetime.fromtimestamp(manifest["finished_at"], datetime.timezone.utc)
        lines.append(f"| {stage} | {manifest.get('seconds', 0):.0f} | {when:%Y-%m-%d %H:%M} UTC |")
    return "\n".join(lines) if len(lines) > 2 else ""


def genrm_verdict(summary: dict, srpo_summary: dict | None) -> str:
    """The GenRM's gain over its base with its interval, and whether SRPO scored steps with it."""
    gain = summary.get("gain_over_base")
    lines = []
    if gain:
        lines.append(
            f"Gain over the untrained base: {100 * gain['delta']:+.1f} points of step accuracy "
            f"[{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}] (95% bootstrap over "
            f"{gain['clusters']} held-out responses, {gain['n']} questions): "
            f"{'beyond noise' if gain['beyond_noise'] else 'within noise'}."
        )
    used = (srpo_summary or {}).get("genrm")
    if used:
        lines.append(f"SRPO's step rewards: {used['reason']}.")
    return "\n\n".join(lines)


def genrm_table(summary: dict) -> str:
    """Step accuracy of the trained GenRM and of its untrained base on the held-out steps."""
    given = {"GenRM": summary.get("step_accuracy"), "base (untrained)": summary.get("base_step_accuracy")}
    rows: dict[str, dict] = {name: row for name, row in given.items() if row}
    if not rows:
        return ""
    steps = sorted({step for row in rows.values() for step in row["per_step"]}, key=int)
    lines = [
        "| judge | n | accuracy | correct steps | corrupted steps | says Yes | "
        + " | ".join(f"step {s}" for s in steps)
        + " |",
        "|" + "---|" * (6 + len(steps)),
    ]
    for name, row in rows.items():
        cells = [_pct(row["accuracy"]), _pct(row["correct_steps"]), _pct(row["corrupted_steps"]), _pct(row["yes_rate"])]
        cells += [_pct(row["per_step"].get(s)) for s in steps]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_predictions(run: Path, slug: str) -> dict[str, tuple[int, int]]:
    """{example id: (gold level, predicted level)} from eval/<slug>/predictions.jsonl."""
    return {row["id"]: (row["label"], row["pred"]) for row in _read_jsonl(run / "eval" / slug / "predictions.jsonl")}


def stage_comparisons(slugs: list[str]) -> list[tuple[str, str]]:
    """Each stage against the one before it in the table, the last RL stage against SFT, and
    every trained stage against the lexical baseline (does the LLM earn its cost?)."""
    trained = [s for s in slugs if s != "lexical"]
    pairs = list(zip(trained, trained[1:]))
    if "lexical" in slugs:
        pairs += [("lexical", s) for s in trained if s != "base"]
    if "sft" in trained and trained[-1] not in ("base", "sft") and ("sft", trained[-1]) not in pairs:
        pairs.append(("sft", trained[-1]))
    return pairs


def differences_table(run: Path, slugs: list[str], seed: int = 0) -> str:
    """Paired-bootstrap 95% intervals of the change in macro-F1, accuracy and QWK between
    stages, on the examples both were scored on."""
    names = stage_rows(run)
    predictions = {slug: stage_predictions(run, slug) for slug in slugs}
    lines = difference_header("its stage's time")
    scored = [s for s in slugs if predictions[s]]
    trained = [s for s in scored if s != "lexical"]
    consecutive = set(zip(trained, trained[1:]))  # the changes one stage made, so its time is their cost
    for before, after in stage_comparisons(scored):
        if not predictions[before].keys() & predictions[after].keys():
            continue
        manifest = (_read_json(run / after / "manifest.json") or {}) if (before, after) in consecutive else {}
        seconds = f"{manifest['seconds'] / 60:.1f} min" if manifest.get("seconds") else "–"
        lines.append(
            difference_row(f"{names[before]} → {names[after]}", predictions[before], predictions[after], seed)
            + f" {seconds} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def validated_stages(run: Path) -> list[str]:
    """The training stages' folders that may hold validation checks, in pipeline order (SRPO's
    curriculum stages each have their own)."""
    curriculum = (_read_json(run / "srpo" / "summary.json") or {}).get("curriculum") or {}
    srpo = [f"srpo/stage-{name}" for name in curriculum]  # the order they ran in
    return ["sft", "grpo", *srpo]


def validation_section(run: Path, stage: str) -> str:
    """A training stage's validation checks (step, macro-F1, QWK, answers per level), the step it
    kept and the reason it stopped (``taosr.stopping``); empty when it did not validate."""
    checks = [line for line in _read_jsonl(run / stage / "metrics.jsonl") if "val_macro_f1" in line]
    if not checks:
        return ""
    lines = ["| step | val macro-F1 | val QWK | answers 1/2/3/4 |", "|---|---|---|---|"]
    for check in checks:
        answers = check.get("val_predicted_levels") or {}
        lines.append(
            f"| {check['step']} | {_pct(check['val_macro_f1'])} | {_unit(check.get('val_qwk'))} | "
            + "/".join(str(answers.get(str(level), 0)) for level in (1, 2, 3, 4))
            + " |"
        )
    summary = _read_json(run / stage / "summary.json") or {}
    kept = summary.get("saved_step", summary.get("step"))
    return "\n".join(lines) + f"\n\nKept step {kept}; stopped by {summary.get('stop_reason', 'its step budget')}.\n"


def decision_section(decision: dict) -> str:
    """The rule the export stage chose on validation, and what it does on the eval split."""
    chosen = next(row for row in decision["candidates"] if row["rule"] == decision["described"])
    text = (
        f"Chosen on the {decision['split']} split ({decision['n']} rows) for {decision['metric']}: "
        f"**{decision['described']}** ({_pct(chosen[decision['metric']])}). Serving and batch prediction "
        "apply it; the stage table above is the plain argmax.\n"
    )
    on_eval = decision.get("on_eval_split")
    if on_eval:
        rows = ["| rule | n | macro-F1 | accuracy | QWK |", "|---|---|---|---|---|"]
        # The plain argmax kept: one row, not the same one twice.
        shown = (
            [("argmax", "argmax (chosen)")]
            if decision["described"] == "argmax"
            else [("argmax", "argmax"), ("chosen", decision["described"])]
        )
        for name, label in shown:
            m = on_eval[name]
            rows.append(
                f"| {label} | {on_eval['n']} | {_pct(m['macro_f1'])} | {_pct(m['accuracy'])} | {_unit(m['qwk'])} |"
            )
        text += f"\nOn the {on_eval['split']} split:\n\n" + "\n".join(rows) + "\n"
    return text + "\n"


def cot_examples(run: Path, count: int = 4) -> str:
    """A few training rows with the reasoning the teacher wrote for them (first by id)."""
    import pyarrow.parquet as pq

    folder = run / "cot" / "kept"
    if not folder.is_dir():
        return ""
    table = pq.read_table(folder, columns=["id", "query", "title", "label", "reasoning", "split", "teacher"])
    rows = sorted((r for r in table.to_pylist() if r["split"] == "train" and r["reasoning"]), key=lambda r: r["id"])
    from taosr.formats import Reasoning

    blocks = []
    for row in rows[:: max(1, len(rows) // count)][:count]:
        steps = "\n".join(Reasoning(**json.loads(row["reasoning"])).step_lines())
        blocks.append(
            f"Query `{row['query']}`, item `{row['title']}`, gold level {row['label']} "
            f"(teacher: {row['teacher']}):\n\n```\n{steps}\n```\n"
        )
    return "\n".join(blocks)


def training_logs(run: Path) -> dict[str, list[dict]]:
    """{stage (or srpo curriculum stage): metrics.jsonl rows}."""
    logs = {}
    for stage in ("sft", "dpo", "grpo", "genrm"):
        rows = _read_jsonl(run / stage / "metrics.jsonl")
        if rows:
            logs[stage] = rows
    for folder in sorted((run / "srpo").glob("stage-*")):
        rows = _read_jsonl(folder / "metrics.jsonl")
        if rows:
            logs[f"srpo/{folder.name[len('stage-') :]}"] = rows
    return logs


# --------------------------------------------------------------------------- the report


def build_report(run_dir: str, out_dir: str | None = None, title: str | None = None) -> dict:
    """Write report.md, report.html and the plots; returns their paths and what was missing.
    ``title`` names the run in the heading (default: ``run_dir``; an S3 run's URI when the
    report is built from a local copy)."""
    import markdown

    if "://" in run_dir:
        raise ValueError(f"report reads a local run directory; copy {run_dir} locally first (e.g. aws s3 sync)")
    run = Path(run_dir)
    metrics = stage_metrics(run)
    if not metrics:
        raise FileNotFoundError(f"{run}/eval holds no <stage>/metrics.json: run the eval stage first")
    out = Path(out_dir) if out_dir else run / "report"
    out.mkdir(parents=True, exist_ok=True)
    missing = []
    first = next(iter(metrics.values()))
    parts = [
        f"# taosr run report: `{title or run}`\n",
        f"All models are scored on the same held-out split (`{first.get('split', '?')}`, "
        f"n = {first['overall'].get('n')}) by their first-token level distribution. Scores in %. "
        "Hallucination and format-error rates come from the decoded sample of each CoT model.\n",
        "## Stage table\n",
        stage_table(metrics),
        "\n",
        "## Macro-F1 by query type\n",
        query_type_table(metrics),
        "\n",
        "## Accuracy by query type\n",
        query_type_table(metrics, "accuracy"),
        "\n",
    ]
    differences = differences_table(run, list(metrics))
    if differences:
        parts += [
            "## Stage differences against noise\n",
            f"Paired bootstrap over the held-out examples ({BOOTSTRAP_RESAMPLES:,} resamples): a change is beyond "
            "noise when the 95% interval of its macro-F1 difference excludes 0. "
            '"Rows changed" counts the predictions that differ, '
            "how many of them became right and how many became wrong: the intervals rest on those rows alone, and "
            "the sign test "
            "(exact, two-sided) says how likely that split is if the changes helped and hurt alike; a handful of "
            "rows all one way "
            "gives an interval that excludes 0 and a sign test that does not convince. The last column is the wall "
            "time of the stage "
            "that made the change: what it cost next to what it bought.\n",
            differences,
            "\n",
        ]
    else:
        missing.append("stage differences (no eval/<stage>/predictions.jsonl)")
    confusion = plot_confusions(metrics, _titles(metrics), out)
    if confusion:
        parts += ["## Confusion matrices\n", f"![confusion]({confusion.name})\n"]
    first_token_pass = first_token_pass_table(metrics)
    if first_token_pass:
        parts += [
            "## pass@k of every stage on the eval split\n",
            "From each model's first-token level distribution: the chance that one of k levels sampled at "
            "temperature 1 is right (what sampled pass@k converges to). RL that sharpens the policy moves "
            "pass@1 toward pass@k.\n",
            first_token_pass,
            "\n",
        ]
    pass_at_k = _read_json(run / "sample" / "pass_at_k.json")
    if pass_at_k:
        plot = plot_pass_at_k(pass_at_k, out)
        parts += ["## pass@k (stage 2)\n", pass_at_k_table(pass_at_k), "\n", f"![pass@k]({plot.name})\n"]
    else:
        missing.append("pass@k (no sample/pass_at_k.json)")
    validation = [(stage, validation_section(run, stage)) for stage in validated_stages(run)]
    validation = [(stage, curve) for stage, curve in validation if curve]
    if validation:
        parts.append("## Validation while training, and why each stage stopped\n")
        for stage, curve in validation:
            parts += [f"### {stage}\n", curve, "\n"]
    cot_sample = cot_examples(run)
    if cot_sample:
        parts += ["## What SFT was trained on: a sample of the CoT\n", cot_sample, "\n"]
    pairs = _read_json(run / "dpo" / "pairs.json")
    if pairs:
        parts += ["## DPO pairs\n", "```json\n" + json.dumps(pairs, indent=2) + "\n```\n"]
    genrm = _read_json(run / "genrm" / "summary.json")
    if genrm and genrm_table(genrm):
        parts += [
            "## GenRM step accuracy (held-out annotated steps)\n",
            f"Trained on {genrm['examples']} Yes/No step questions ({_pct(genrm['yes_share'])}% Yes).\n",
            genrm_table(genrm),
            "\n",
            genrm_verdict(genrm, _read_json(run / "srpo" / "summary.json")),
            "\n",
        ]
    else:
        missing.append("GenRM step accuracy (no genrm/summary.json)")
    ablation = run / "ablation" / "srpo_step_rewards.md"
    if ablation.is_file():
        parts += ["## SRPO step-reward ablation\n", ablation.read_text(), "\n"]
    logs = training_logs(run)
    curves = plot_curves(logs, out)
    if curves:
        parts += ["## Training curves\n"] + [f"![{path.stem}]({path.name})\n" for path in curves]
    else:
        missing.append("training curves (no metrics.jsonl)")
    sweep = _read_json(run / "export" / "beta" / "cumpt_sweep.json")
    if sweep:
        plot = out / "cumpt_sweep.png"
        plot_sweep(sweep["sweep"], sweep["best_beta"], plot)
        best = next(row for row in sweep["sweep"] if row["beta"] == sweep["best_beta"])
        parts += [
            "## CumPT\n",
            f"Chosen beta {sweep['best_beta']:g} (maximises {sweep['metric']}: "
            f"{_pct(best[sweep['metric']])}; tier accuracy {_pct(best.get('tier_accuracy'))}).\n",
            f"![cumpt]({plot.name})\n",
        ]
    else:
        missing.append("CumPT sweep (no export/beta/cumpt_sweep.json)")
    decision = _read_json(run / "export" / "decision.json")
    if decision:
        parts += ["## Decision rule\n", decision_section(decision)]
    served = _read_json(run / "serve" / "sample.json")
    if served:
        lines = [
            f"- {r['label']} ({r['tier']}, p4 = {r['probs']['4']:.2f}): {i['title']}"
            for i, r in zip(served["request"]["items"], served["response"]["results"])
        ]
        parts += [
            "## Serving check\n",
            f"Query `{served['request']['query']}`, answered in {served['latency_s'] * 1000:.0f} ms:\n",
            "\n".join(lines) + "\n",
        ]
    timings = timings_table(run)
    if timings:
        parts += ["## Stage timings\n", timings, "\n"]
    if missing:
        parts += ["## Not in this run\n", "\n".join(f"- {m}" for m in missing) + "\n"]
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])
    (out / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>taosr report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "</style>\n" + body
    )
    return {
        "markdown": str(out / "report.md"),
        "html": str(out / "report.html"),
        "plots": sorted(str(p) for p in out.glob("*.png")),
        "missing": missing,
    }
