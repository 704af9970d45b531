"""Ray Data reading and validation with real components: local files, a moto S3 server on
127.0.0.1, and the real ESCI sample in its own format."""

import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taosr.config import DataConfig
from taosr.datasets.readers import read_raw_records
from taosr.datasets.synthetic import generate_rows
from taosr.datasets.validate import validate_records


pytestmark = pytest.mark.slow


# Each kind of malformed line and the reason it must be quarantined with.
def _malformed(i: int, good: list[dict]) -> tuple[bytes, str]:
    base = dict(good[i % len(good)], id=f"bad-{i}")
    kind = i % 10
    if kind == 0:
        return b'{"id": "x", "query": "unterminated', "malformed_json"
    if kind == 1:
        return b'{"id": "\xff\xfe", "query": "q"}', "bad_encoding:line"
    if kind == 2:
        return json.dumps({k: v for k, v in base.items() if k != "title"}).encode(), "missing_field:title"
    if kind == 3:
        return json.dumps(dict(base, label="Great")).encode(), "unknown_label"
    if kind == 4:
        return json.dumps(dict(base, price=-10)).encode(), "wrong_type:price"
    if kind == 5:
        return json.dumps(dict(base, query="q" * 5000)).encode(), "oversized_text:query"
    if kind == 6:
        return json.dumps(dict(base, id=good[i % len(good)]["id"])).encode(), "duplicate_id"
    if kind == 7:
        return json.dumps({k: v for k, v in base.items() if k != "id"}).encode(), "missing_field:id"
    if kind == 8:
        return b"[1, 2, 3]", "not_an_object"
    return json.dumps(dict(base, attributes=["oops"])).encode(), "wrong_type:attributes"


def test_ten_thousand_rows_with_a_thousand_malformed(ray_cluster, tmp_path):
    good = generate_rows(9000, seed=5)
    lines, expected = [], Counter()
    for i, row in enumerate(good):
        lines.append(json.dumps(row).encode())
        if i % 9 == 8:  # interleave: one malformed line after every ninth good one
            line, reason = _malformed(len(expected and list(expected.elements())), good)
            lines.append(line)
            expected[reason] += 1
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert len(lines) == 10000 and sum(expected.values()) == 1000

    result = validate_records(read_raw_records(str(path)), DataConfig())
    assert result.counts["input"] == 10000
    assert result.counts["accepted"] == 9000
    assert result.counts["quarantined"] == 1000
    assert result.counts["reasons"] == dict(expected)
    quarantined = result.quarantined.take_all()
    assert all(row["reason"] and row["source"] and row["line"] > 0 for row in quarantined)
    accepted_ids = [row["id"] for row in result.accepted.select_columns(["id"]).take_all()]
    assert len(set(accepted_ids)) == 9000 and set(accepted_ids) == {row["id"] for row in good}


def test_duplicates_keep_the_first_occurrence(ray_cluster, tmp_path):
    rows = generate_rows(3, seed=1)
    later = dict(rows[0], title="a later copy")
    (tmp_path / "logs.jsonl").write_text("\n".join(json.dumps(r) for r in [rows[0], rows[1], later, rows[2]]))
    result = validate_records(read_raw_records(str(tmp_path / "logs.jsonl")), DataConfig())
    (dup,) = result.quarantined.take_all()
    assert dup["line"] == 3 and dup["reason"] == "duplicate_id"
    titles = {r["title"] for r in result.accepted.take_all()}
    assert "a later copy" not in titles and len(titles) == 3


def test_parquet_and_gzip_jsonl_from_a_folder(ray_cluster, tmp_path):
    rows = generate_rows(40, seed=2)
    for row in rows:
        row["attributes"] = json.dumps(row["attributes"])  # a flat, shop-like schema
        row["step_annotations"] = None
    folder = tmp_path / "parquet"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:25]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[25:]), folder / "part-1.parquet")
    result = validate_records(read_raw_records(str(folder)), DataConfig())
    assert result.counts == {"input": 40, "accepted": 40, "quarantined": 0, "reasons": {}}

    with gzip.open(tmp_path / "logs.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows[:10]))
    result = validate_records(read_raw_records(str(tmp_path / "logs.jsonl.gz")), DataConfig())
    assert result.counts["accepted"] == 10


def test_a_parquet_read_starts_only_the_configured_footer_readers(ray_cluster, tmp_path):
    """Ray 2.60 starts 32 footer-reading actors, a worker process each, for every read_parquet;
    ray.parquet_footer_readers (1 in the suite's cluster, as by default) bounds them."""
    from ray.util.state import list_actors

    from taosr.datasets.storage import read_parquet

    def footer_readers() -> set:
        return {
            a.actor_id
            for a in list_actors(
                filters=[("class_name", "=", "FooterReader")], limit=10_000, raise_on_missing_output=False
            )
        }

    folder = tmp_path / "artifact"
    folder.mkdir()
    for part in range(3):
        pq.write_table(pa.table({"id": [f"{part}-{i}" for i in range(5)]}), folder / f"part-{part}.parquet")
    before = footer_readers()
    assert len(read_parquet(str(folder)).take_all()) == 15
    started = footer_readers() - before
    assert len(started) == 1, f"{len(started)} FooterReader actors for one read"


def test_reading_from_s3(ray_cluster, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="logs")
    rows = generate_rows(30, seed=3)
    body = "\n".join(json.dumps(r) for r in rows) + "\n{broken\n"
    s3.put_object(Bucket="logs", Key="shop/day1.jsonl", Body=body.encode())
    sink = pa.BufferOutputStream()
    pq.write_table(
        pa.Table.from_pylist([dict(r, attributes=json.dumps(r["attributes"]), step_annotations=None) for r in rows]),
        sink,
    )
    s3.put_object(Bucket="logs", Key="pq/day1.parquet", Body=sink.getvalue().to_pybytes())

    config = DataConfig(s3_endpoint=s3_endpoint)
    jsonl = validate_records(read_raw_records("s3://logs/shop/day1.jsonl", s3_endpoint=s3_endpoint), config)
    assert (jsonl.counts["accepted"], jsonl.counts["quarantined"]) == (30, 1)
    assert jsonl.counts["reasons"] == {"malformed_json": 1}
    parquet = validate_records(read_raw_records("s3://logs/pq/day1.parquet", s3_endpoint=s3_endpoint), config)
    assert parquet.counts["accepted"] == 30


def test_real_esci_sample_in_its_own_format(ray_cluster, tmp_path):
    """16 real Amazon ESCI rows (Apache-2.0): labels E/S/I, HTML descriptions, a column mapping."""
    sample = Path(__file__).parent / "data" / "esci-sample"
    with pa.input_stream(str(sample / "sample-products.jsonl.zstd"), compression="zstd") as stream:
        products = {p["fields"]["id"]: p["fields"] for p in map(json.loads, stream.read().decode().splitlines())}
    judgements = pq.read_table(sample / "test-sample.parquet").to_pylist()
    joined = [
        dict(
            j,
            product_title=products[j["product_id"]]["title"],
            product_description=products[j["product_id"]].get("description"),
            attributes={
                "brand": products[j["product_id"]].get("brand"),
                "color": products[j["product_id"]].get("color"),
            },
        )
        for j in judgements
    ]
    (tmp_path / "esci.jsonl").write_text("\n".join(json.dumps(r) for r in joined))
    config = DataConfig(
        columns={
            "id": "example_id",
            "title": "product_title",
            "description": "product_description",
            "label": "esci_label",
            "item_id": "product_id",
            "query_id": "query_id",
        }
    )
    result = validate_records(read_raw_records(str(tmp_path / "esci.jsonl")), config)
    assert result.counts["accepted"] == 16
    accepted = result.accepted.take_all()
    assert Counter(r["label"] for r in accepted) == {4: 3, 3: 6, 1: 7}  # E:3, S:6, I:7
    assert all("<b>" not in (r["description"] or "") and "<br>" not in (r["description"] or "") for r in accepted)
    assert all(json.loads(r["extra"])["product_locale"] == "us" for r in accepted)


def test_cli_validate_prints_counts_and_writes_both_outputs(ray_cluster, tmp_path, capsys):
    from taosr.ray_jobs.cli import main

    rows = generate_rows(20, seed=4)
    lines = [json.dumps(r) for r in rows] + ['{"id": "z", "query": "q", "title": "t", "label": "??"}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines))
    assert main(["data", "validate", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out")]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {"input": 21, "accepted": 20, "quarantined": 1, "reasons": {"unknown_label": 1}}
    assert pq.read_table(tmp_path / "out" / "quarantine").num_rows == 1
    assert pq.read_table(tmp_path / "out" / "accepted").num_rows == 20
    assert "label_aliases" in (tmp_path / "out" / "config.yaml").read_text()
    assert main(["data", "validate", str(tmp_path / "in.txt"), "--out", str(tmp_path / "o2")]) == 2


def test_exists_on_local_and_s3(s3_endpoint, tmp_path):
    import boto3

    from taosr.datasets.storage import exists, write_text

    assert not exists(str(tmp_path / "nope.txt"))
    write_text(str(tmp_path / "yes.txt"), "x")
    assert exists(str(tmp_path / "yes.txt"))
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="runs")
    assert not exists("s3://runs/sft/model/config.json", s3_endpoint)
    write_text("s3://runs/sft/model/config.json", "{}", s3_endpoint)
    assert exists("s3://runs/sft/model/config.json", s3_endpoint)


def test_csv_in_latin_1_with_graded_labels_and_a_column_mapping(ray_cluster, tmp_path):
    """A Home Depot-shaped file: latin-1, quoted fields, a mean rating on 1-3, titles only."""
    lines = [
        '"id","product_uid","product_title","search_term","relevance"',
        '2,100001,"Simpson Strong-Tie 12-Gauge Angle","angle bracket",3',
        '3,100001,"Simpson Strong-Tie 12-Gauge Angle","l bracket",2.5',
        '9,100002,"BEHR Premium Textured DeckOver 1-gal. Tan, 2 \u00b0F","deck over",2.33',
        '16,100005,"Delta Vero 1-Handle Shower Faucet Trim Kit in Caf\u00e9","rain shower head",1.33',
        '17,100005,"a row with a missing field","shower only faucet"',
        '18,100006,"Whirlpool 1.9 cu. ft. Over the Range Microwave","microwave over stove",great',
    ]
    (tmp_path / "train.csv").write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    config = DataConfig(
        encoding="latin-1",
        label_bins={"4": 2.75, "3": 2.25, "2": 1.5, "1": 1.0},
        columns={"query": "search_term", "title": "product_title", "item_id": "product_uid", "label": "relevance"},
    )
    result = validate_records(read_raw_records(str(tmp_path / "train.csv"), encoding="latin-1"), config)
    assert result.counts["input"] == 6 and result.counts["accepted"] == 4
    assert result.counts["reasons"] == {"malformed_csv:4_fields_for_5_columns": 1, "unknown_label": 1}
    accepted = {r["id"]: r for r in result.accepted.take_all()}
    assert {i: r["label"] for i, r in accepted.items()} == {"2": 4, "3": 3, "9": 3, "16": 1}
    assert accepted["16"]["title"].endswith("Café") and "°F" in accepted["9"]["title"]
    assert json.loads(accepted["3"]["extra"]) == {"label_raw": "2.5"}
    assert accepted["2"]["item_id"] == "100001"


def test_tsv_in_utf_8_quarantines_a_row_that_does_not_decode(ray_cluster, tmp_path):
    body = "id\tquery\ttitle\tlabel\tprice\n1\tphone case\tSpigen case\tE\t1,299.00\n".encode()
    body += b"2\tphone case\tbad \xff title\tI\t\n3\tcase\tESR case\tS\t19,99 EUR\n"
    (tmp_path / "logs.tsv").write_bytes(body)
    result = validate_records(read_raw_records(str(tmp_path / "logs.tsv")), DataConfig())
    assert result.counts == {"input": 3, "accepted": 2, "quarantined": 1, "reasons": {"bad_encoding:title": 1}}
    assert sorted(r["price"] for r in result.accepted.take_all()) == [19.99, 1299.0]


def test_max_rows_samples_whole_queries_and_counts_the_rest(ray_cluster, tmp_path):
    rows = generate_rows(300, seed=6)
    (tmp_path / "logs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = validate_records(read_raw_records(str(tmp_path / "logs.jsonl")), DataConfig(max_rows=100))
    counts = result.counts
    assert counts["accepted"] + counts["sampled_out"] == 300 and 40 < counts["accepted"] < 180
    kept = {r["query"] for r in result.accepted.take_all()}
    assert all(r["query"] not in kept for r in rows if r["id"] not in {a["id"] for a in result.accepted.take_all()})


def test_a_model_folder_on_s3_loads_where_a_scorer_starts(s3_endpoint, tiny_model, tmp_path, monkeypatch):
    """An s3:// model (a run's sft/model on S3) is fetched once per node and scores exactly like
    the local folder; a changed folder on S3 is fetched again."""
    import boto3

    from taosr.actors.scorer import LevelScorer
    from taosr.datasets.storage import copy_tree, local_dir, write_text
    from taosr.prompts import Item

    monkeypatch.setenv("TAOSR_S3_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="models")
    copy_tree(tiny_model, "s3://models/run/sft/model", s3_endpoint)
    first = local_dir("s3://models/run/sft/model")
    assert first.startswith(str(tmp_path / "cache")) and local_dir("s3://models/run/sft/model") == first
    items = [Item("Anker USB-C Charger", None, {}, None)]
    remote = LevelScorer("s3://models/run/sft/model", engine="hf", dtype="float32")
    local = LevelScorer(tiny_model, engine="hf", dtype="float32")
    prompts = local.prompts_for(["charger"], items)
    assert remote.prompts_for(["charger"], items) == prompts
    assert (remote.score_prompts(prompts) == local.score_prompts(prompts)).all()
    write_text("s3://models/run/sft/model/notes.txt", "retrained", s3_endpoint)
    assert local_dir("s3://models/run/sft/model") != first
    with pytest.raises(FileNotFoundError, match="no files under"):
        local_dir("s3://models/run/none")


def test_training_logs_of_a_run_on_s3_land_on_s3_and_survive_a_resume(s3_endpoint):
    import boto3

    from taosr.datasets.storage import exists, read_text
    from taosr.training.trainer import MetricsLog

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="logs")
    folder = "s3://logs/run/sft"
    first = MetricsLog("sft", folder, enabled=True, s3_endpoint=s3_endpoint)
    for step in (1, 2, 3):
        first.log(step, {"step": step, "loss": 1.0 / step})
    first.sync()  # what a checkpoint does
    assert [json.loads(line)["step"] for line in read_text(f"{folder}/metrics.jsonl", s3_endpoint).splitlines()] == [
        1,
        2,
        3,
    ]
    first.close()
    # A restart from the checkpoint after step 2 (another worker, another node): steps after it are logged again.
    again = MetricsLog("sft", folder, enabled=True, resume_after_step=2, s3_endpoint=s3_endpoint)
    again.log(3, {"step": 3, "loss": 0.3})
    again.close()
    lines = [json.loads(line) for line in read_text(f"{folder}/metrics.jsonl", s3_endpoint).splitlines()]
    assert [(row["step"], row["loss"]) for row in lines] == [(1, 1.0), (2, 0.5), (3, 0.3)]
    assert exists(f"{folder}/tensorboard", s3_endpoint)


def test_a_csv_labelled_1_to_4_under_rating_bins_stops_with_the_cause(ray_cluster, tmp_path):
    """Levels 1-4 read through the Home Depot profile's bins would turn every 3 into a 4: the data
    stage stops before writing anything, names the cause and the fix; without the bins
    (``data.label_bins={}`` on the command line) the same file is accepted with its labels."""
    from taosr.config import load_config
    from taosr.datasets.label_bins import LabelBinsError
    from taosr.ray_jobs.data import validate_to

    lines = ["id,search_term,product_title,relevance"]
    lines += [f"{i},query {i % 5},item {i},{1 + i % 4}" for i in range(40)]
    (tmp_path / "logs.csv").write_text("\n".join(lines) + "\n")
    config = load_config("configs/homedepot.yaml", [f"data.source={tmp_path / 'logs.csv'}", "data.encoding=utf-8"])
    with pytest.raises(LabelBinsError, match=r"already a level 1-4.*3 -> 4 \(10 rows\)"):
        validate_to(config.data.source, str(tmp_path / "out"), config.data)
    assert not (tmp_path / "out" / "accepted").exists()

    config = load_config(
        "configs/homedepot.yaml", [f"data.source={tmp_path / 'logs.csv'}", "data.encoding=utf-8", "data.label_bins={}"]
    )
    result = validate_to(config.data.source, str(tmp_path / "out"), config.data)
    assert result.counts["accepted"] == 40
    assert Counter(r["label"] for r in result.accepted.take_all()) == {1: 10, 2: 10, 3: 10, 4: 10}
