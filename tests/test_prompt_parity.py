"""One prompt for one row, everywhere: a logged row rendered through SFT's tokenizer, the RL and
sampling stages' Arrow rows, the scorers' numpy batches (eval, export, predict), a Ray Data
round trip of dict attributes, and the serving request gives the same tokens."""

import json

import pyarrow as pa
import pytest

from taosr.actors.scorer import _plain
from taosr.datasets.schema import normalise_row
from taosr.formats import Reasoning, ResponseFormat
from taosr.prompts import build_prompt, item_from_row

pytestmark = pytest.mark.slow

LOGGED = {
    "id": "r1",
    "query": "Phone case  not pink",
    "title": "<b>Spigen</b> Case for iPhone 15, pink",
    "category": ["Electronics", "Cases"],
    "attributes": {"color": "pink", "material": "silicone"},
    "price": "12,99 EUR",
    "description": "<p>Slim case.</p><ul><li>Colour: pink</li></ul>" + " more" * 60,
    "label": 2,
}
OTHER = {"id": "r2", "query": "usb c cable", "title": "Anker USB-C cable", "attributes": {"length": "1m"}, "label": 4}
REASONING = Reasoning(
    "a phone case that is not pink",
    "a pink Spigen case",
    "match",
    "a case, as asked",
    "violated",
    "the case is pink",
    2,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _accepted_table(rows):
    from taosr.datasets.validate import PARSED_SCHEMA

    names = [
        f.name for f in PARSED_SCHEMA if f.name not in ("ok", "reason", "detail", "raw", "source", "line", "split")
    ]
    return pa.Table.from_pylist(
        [{k: r.get(k) for k in names} for r in rows], schema=pa.schema([PARSED_SCHEMA.field(n) for n in names])
    )


def test_every_path_renders_the_same_prompt_tokens(ray_cluster, tiny_model, tokenizer):
    import ray

    from taosr.training.sft_data import SftTokenizer
    from taosr.serve.app import prompt_inputs
    from taosr.serve.validation import RequestLimits, parse_request

    accepted = [normalise_row(LOGGED), normalise_row(OTHER)]
    expected = build_prompt(tokenizer, accepted[0]["query"], item_from_row(accepted[0]))
    expected_ids = tokenizer.encode(expected, add_special_tokens=False)
    assert "Description: Slim case. Colour: pink" in expected and "<p>" not in expected and "<b>" not in expected

    # SFT (and DPO, sampling, RL: the same pyarrow rows through item_from_row)
    table = (
        _accepted_table(accepted)
        .append_column("reasoning", pa.array([json.dumps(REASONING.__dict__)] * 2))
        .append_column("split", pa.array(["train"] * 2))
    )
    sft = SftTokenizer(tiny_model, "post_cot", 1024)(table).to_pylist()[0]
    assert sft["input_ids"][: sft["decision_index"]] == expected_ids

    # The scorers (eval, export, predict): Ray Data numpy batches read back from Parquet-like Arrow
    def scorer_prompts(batch):
        rows = [{key: _plain(batch[key][i]) for key in batch} for i in range(len(batch["id"]))]
        return {"prompt": [build_prompt(tokenizer, r["query"], item_from_row(r)) for r in rows]}

    via_numpy = (
        ray.data.from_arrow(_accepted_table(accepted)).map_batches(scorer_prompts, batch_format="numpy").take_all()
    )
    assert via_numpy[0]["prompt"] == expected

    # Dict attributes through Ray Data (Arrow may turn them into a struct of every row's keys)
    structs = ray.data.from_items(
        [{**accepted[0], "attributes": LOGGED["attributes"]}, {**accepted[1], "attributes": OTHER["attributes"]}]
    ).take_all()
    row = next(r for r in structs if r["id"] == "r1")
    assert build_prompt(tokenizer, row["query"], item_from_row(row)) == expected

    # Serving: the raw request fields, cleaned by the log schema's own rules
    body = {
        "query": LOGGED["query"],
        "items": [
            {
                "id": "r1",
                "title": LOGGED["title"],
                "category": "Electronics > Cases",
                "attributes": LOGGED["attributes"],
                "price": 12.99,
                "description": LOGGED["description"],
            }
        ],
    }
    query, items = prompt_inputs(parse_request(json.dumps(body).encode(), RequestLimits()))
    served = build_prompt(tokenizer, query, items[0], ResponseFormat.POST_COT)
    assert tokenizer.encode(served, add_special_tokens=False) == expected_ids
