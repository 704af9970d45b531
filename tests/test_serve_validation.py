"""Request validation, the export check and the CumPT sweep tool: fast, no Ray."""

import json

import numpy as np
import pytest

from taosr.serve.validation import RequestError, RequestLimits, parse_request

LIMITS = RequestLimits(max_items=3, max_body_bytes=4000, max_query_chars=40, max_title_chars=60)
GOOD = {
    "query": "phone case not pink",
    "items": [
        {"id": "a", "title": "Spigen case, black", "price": 12},
        {"id": "b", "title": "ESR case", "attributes": {"color": "pink"}},
    ],
}


def status_of(body: bytes) -> tuple[int, str]:
    with pytest.raises(RequestError) as caught:
        parse_request(body, LIMITS)
    return caught.value.status, caught.value.message


def encode(value) -> bytes:
    return json.dumps(value).encode()


def test_a_good_request_parses():
    request = parse_request(encode(GOOD), LIMITS)
    assert [item.id for item in request.items] == ["a", "b"] and request.explain is False


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"\xff\xfe{}", 400, "not valid UTF-8"),
        (b'{"query": ', 400, "not valid JSON"),
        (encode([1, 2]), 422, "JSON object"),
        (encode({"items": GOOD["items"]}), 422, "query"),
        (encode({"query": "q"}), 422, "items"),
        (encode({**GOOD, "debug": True}), 422, "debug"),
        (encode({"query": "q", "items": [{"id": "a", "title": "t", "colour": "red"}]}), 422, "colour"),
        (encode({"query": 5, "items": GOOD["items"]}), 422, "query"),
        (encode({"query": "q", "items": [{"id": "a", "title": "t", "price": "cheap"}]}), 422, "price"),
        (encode({"query": "q", "items": [{"id": "a", "title": "t", "price": -1}]}), 422, "price"),
        (encode({"query": "q", "items": [{"id": 7, "title": "t"}]}), 422, "id"),
        (encode({"query": "q", "items": [{"id": "a", "title": "t", "attributes": {"k": 1}}]}), 422, "attributes"),
        (encode({**GOOD, "explain": "yes"}), 422, "explain"),
        (encode({"query": "q", "items": []}), 422, "empty"),
        (encode({"query": "q", "items": [{"id": str(i), "title": "t"} for i in range(4)]}), 422, "limit is 3"),
        (encode({"query": "q" * 41, "items": GOOD["items"]}), 422, "limit is 40"),
        (encode({"query": "q", "items": [{"id": "a", "title": "t" * 61}]}), 422, "title"),
        (encode({"query": "   ", "items": GOOD["items"]}), 422, "must not be empty"),
        (encode({"query": "q", "items": [{"id": "a", "title": "t"}, {"id": "a", "title": "u"}]}), 422, "duplicate"),
        (encode({"query": "case\x00drop table", "items": GOOD["items"]}), 422, "U+0000"),
        (encode({"query": "case \u202eknip", "items": GOOD["items"]}), 422, "U+202E"),
        (b'{"query": "bad \\ud800 text", "items": [{"id": "a", "title": "t"}]}', 400, "surrogate"),
        (b" " * 4001, 413, "limit is 4000"),
        (b"[" * 3999, 400, "nests too deeply"),
        (b'{"query": "q", "items": ' + b"[" * 3900, 400, "nests too deeply"),
    ],
)
def test_bad_requests_get_the_right_status_and_a_clear_message(body, status, fragment):
    got_status, message = status_of(body)
    assert got_status == status and fragment in message, message


def test_other_languages_pass():
    body = encode({"query": "手机壳 不要粉色", "items": [{"id": "1", "title": "Funda de silicona — negro"}]})
    assert parse_request(body, LIMITS).query == "手机壳 不要粉色"


def test_export_check_refuses_a_mismatched_template(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from taosr.models import MODEL_INFO, export_model
    from taosr.serve.app import ModelExportError, check_export

    with pytest.raises(ModelExportError, match="taosr model export"):
        check_export(tiny_model, AutoTokenizer.from_pretrained(tiny_model))
    exported = export_model(tiny_model, str(tmp_path / "served"))
    tokenizer = AutoTokenizer.from_pretrained(exported)
    assert check_export(exported, tokenizer)["format"] == "post_cot"
    tokenizer.chat_template = tokenizer.chat_template.replace("im_start", "turn_start")
    with pytest.raises(ModelExportError, match="chat template"):
        check_export(exported, tokenizer)
    record = json.loads((tmp_path / "served" / MODEL_INFO).read_text())
    (tmp_path / "served" / MODEL_INFO).write_text(json.dumps({**record, "format": "pre_cot"}))
    with pytest.raises(ModelExportError, match="pre-CoT"):
        check_export(exported, AutoTokenizer.from_pretrained(exported))


def test_cumpt_sweep_tool_picks_beta_and_plots(tmp_path):
    from taosr.cumpt_sweep import sweep_and_plot

    rng = np.random.default_rng(0)
    lines = []
    for _ in range(200):
        gold = int(rng.integers(1, 5))
        logits = rng.normal(size=4)
        logits[4 - gold] += 2.0  # columns in LEVELS order 4, 3, 2, 1
        p = np.exp(logits) / np.exp(logits).sum()
        lines.append(json.dumps({"label": gold, **{f"p_{k}": float(v) for k, v in zip((4, 3, 2, 1), p)}}))
    (tmp_path / "predictions.jsonl").write_text("\n".join(lines))
    result = sweep_and_plot(str(tmp_path / "predictions.jsonl"), str(tmp_path / "out"))
    sweep = json.loads((tmp_path / "out" / "cumpt_sweep.json").read_text())["sweep"]
    assert result["macro_f1"] == max(row["macro_f1"] for row in sweep)
    assert 0 < result["best_beta"] <= 1 and (tmp_path / "out" / "cumpt_sweep.png").stat().st_size > 1000


def test_api_keys_are_read_where_the_ingress_runs_and_fail_closed(monkeypatch):
    from taosr.serve.app import api_keys, key_accepted, presented_key

    assert api_keys("") == ()  # authentication off
    monkeypatch.setenv("TAOSR_KEYS", " k1 , k2,,")
    keys = api_keys("TAOSR_KEYS")
    assert keys == (b"k1", b"k2")
    monkeypatch.setenv("TAOSR_KEYS", " ")
    with pytest.raises(RuntimeError, match="TAOSR_KEYS is empty or unset"):
        api_keys("TAOSR_KEYS")
    assert presented_key({"authorization": "Bearer k2"}) == b"k2"
    assert presented_key({"authorization": "bearer  k1 "}) == b"k1"
    assert presented_key({"x-api-key": "k1"}) == b"k1"
    assert presented_key({"authorization": "Basic abc"}) is None and presented_key({}) is None
    assert key_accepted(b"k2", keys) and not key_accepted(b"k3", keys) and not key_accepted(None, keys)
    assert key_accepted(None, ())


def test_a_gpu_profiles_serve_config_asks_for_the_replicas_gpus():
    from taosr.serve.deployment import serve_config

    from taosr.decision import DecisionRule

    from taosr.config import load_config

    tiny = load_config("configs/tiny.yaml")
    on_gpus = load_config(
        "configs/tiny.yaml",
        ["ray.device=gpu", "eval.gpus_per_engine=2", "eval.tensor_parallel_size=2", "eval.gpu_memory_utilization=0.6"],
    )
    cpu = serve_config("/models/m", DecisionRule("cumpt", beta=0.4), tiny)
    gpu = serve_config("/models/m", DecisionRule("cumpt", beta=0.4), on_gpus)
    [cpu_app], [gpu_app] = cpu["applications"], gpu["applications"]
    model = {d["name"]: d for d in gpu_app["deployments"]}["LevelModel"]
    assert model["ray_actor_options"]["num_gpus"] == 2.0 and gpu_app["args"]["tensor_parallel_size"] == 2
    assert "num_gpus" not in {d["name"]: d for d in cpu_app["deployments"]}["LevelModel"]["ray_actor_options"]
    # CUDA graphs and the GPU share on the GPU profile; eager on CPU.
    assert gpu_app["args"]["enforce_eager"] is False and gpu_app["args"]["gpu_memory_utilization"] == 0.6
    assert cpu_app["args"]["enforce_eager"] is True
    # A GPU profile serves the cluster: every interface of every node, with API keys; CPU: the head's loopback.
    assert (gpu["proxy_location"], gpu["http_options"]["host"], gpu_app["args"]["api_keys_env"]) == (
        "EveryNode",
        "0.0.0.0",
        "TAOSR_API_KEYS",
    )
    assert (cpu["proxy_location"], cpu["http_options"]["host"], cpu_app["args"]["api_keys_env"]) == (
        "HeadOnly",
        "127.0.0.1",
        "",
    )
    assert gpu_app["args"]["beta"] == 0.4 and gpu_app["args"]["model_path"] == "/models/m"
    assert DecisionRule(**gpu_app["args"]["decision"], beta=gpu_app["args"]["beta"]) == DecisionRule("cumpt", beta=0.4)


def test_admission_bounds_waiting_requests_and_items_but_never_refuses_an_idle_replica():
    from taosr.serve.app import Admission

    by_items = Admission(max_items=300)
    assert by_items.refusal(500) is None  # nothing waits: even a request over the bound is served
    by_items.enter(200)
    assert by_items.refusal(100) is None  # 300 in all: at the bound, admitted
    assert "200 items are waiting" in by_items.refusal(101)
    by_items.enter(100)
    assert by_items.refusal(1) is not None
    by_items.leave(200)
    assert by_items.refusal(200) is None and by_items.refusal(201) is not None
    by_items.leave(100)
    assert (by_items.requests, by_items.items) == (0, 0)

    by_requests = Admission(max_requests=2)
    by_requests.enter(1)
    assert by_requests.refusal(10_000) is None
    by_requests.enter(1)
    assert "2 requests are waiting" in by_requests.refusal(1)
    assert Admission().refusal(10**9) is None  # both bounds off


@pytest.mark.parametrize(
    "field, make",
    [
        (
            "max_query_chars",
            lambda n: ({"query": "q" * n, "title": "t"}, {"query": "q" * n, "items": [{"id": "a", "title": "t"}]}),
        ),
        (
            "max_title_chars",
            lambda n: ({"query": "q", "title": "t" * n}, {"query": "q", "items": [{"id": "a", "title": "t" * n}]}),
        ),
        (
            "max_attribute_chars",
            lambda n: (
                {"query": "q", "title": "t", "attributes": {"color": "c" * n}},
                {"query": "q", "items": [{"id": "a", "title": "t", "attributes": {"color": "c" * n}}]},
            ),
        ),
    ],
)
def test_a_logged_row_and_a_request_item_share_every_text_limit(field, make):
    """One definition (taosr.limits): at the limit both the data stage and the endpoint accept,
    one character over both refuse."""
    from taosr.config import DataConfig
    from taosr.datasets.schema import Limits, RowError, normalise_row
    from taosr.limits import InputLimits

    assert getattr(DataConfig(), field) == getattr(RequestLimits(), field) == getattr(InputLimits(), field)
    limit = 30
    limits = InputLimits(**{field: limit})
    serving = RequestLimits(**{field: limit})
    for size, accepted in ((limit, True), (limit + 1, False)):
        row, request = make(size)
        row = {"id": "r1", "label": 4, **row}
        if accepted:
            normalise_row(row, Limits(**{field: limit}))
            parse_request(encode(request), serving)
        else:
            with pytest.raises(RowError, match="oversized"):
                normalise_row(row, limits)
            with pytest.raises(RequestError, match="limit is 30"):
                parse_request(encode(request), serving)
