"""The real Ray Serve app on 127.0.0.1 with the tiny model: probabilities against a
transformers forward pass, CumPT tiers, bad input over HTTP, and a bounded load test."""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from taosr.cumpt import cumpt_level

pytestmark = pytest.mark.slow

ITEMS = [
    {
        "id": "a",
        "title": "Spigen Case for iPhone 15, pink",
        "category": "Electronics > Cases",
        "attributes": {"color": "pink", "material": "silicone"},
        "price": 12.99,
    },
    {"id": "b", "title": "Anker 20W USB-C Charger"},
    {"id": "c", "title": "<b>ESR</b> Clear Case for iPhone 15", "price": 9},
]


API_KEY = "test-key-7f3a"


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tiny_model, tmp_path_factory):
    import os

    from ray import serve

    from taosr.models import export_model
    from taosr.ray_jobs.serve_check import wait_until_healthy
    from taosr.serve.app import run

    model = export_model(tiny_model, str(tmp_path_factory.mktemp("served") / "model"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["TAOSR_TEST_API_KEYS"] = f"old-key,{API_KEY}"
    # Eager: these tests are about HTTP behaviour (test_export_serve_run serves the compiled engine).
    url = run(
        model,
        port=port,
        engine="vllm",
        dtype="float32",
        beta=0.5,
        compile_engine=False,
        limits={"max_items": 50, "max_explain_items": 2},
        api_keys_env="TAOSR_TEST_API_KEYS",
    )
    wait_until_healthy(url, timeout_s=180)
    yield url, model
    serve.shutdown()


def post(url, body, key=API_KEY, **kwargs):
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(
        f"{url}/v1/relevance",
        content=body if isinstance(body, bytes) else json.dumps(body),
        headers=headers,
        timeout=60,
        **kwargs,
    )


def test_scores_match_a_transformers_forward_and_tiers_follow_cumpt(endpoint):
    from taosr.actors.scorer import LevelScorer
    from taosr.prompts import Item
    from taosr.text import clean_text

    url, model = endpoint
    response = post(url, {"query": "phone case not pink", "items": ITEMS})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["a", "b", "c"]
    reference = LevelScorer(model, engine="hf", dtype="float32")
    items = [Item(clean_text(i["title"]), i.get("category"), i.get("attributes", {}), i.get("price")) for i in ITEMS]
    expected = reference.score_prompts(reference.prompts_for(["phone case not pink"] * 3, items))
    for result, row in zip(results, expected):
        probs = {int(k): v for k, v in result["probs"].items()}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose([probs[k] for k in (4, 3, 2, 1)], row, atol=1e-4)
        assert result["level"] == cumpt_level(probs, 0.5)
        assert result["label"].startswith(str(result["level"]))
        assert result["tier"] == {4: "Good", 3: "Good", 2: "Mid", 1: "Bad"}[result["level"]]
        assert 0.0 <= result["score"] <= 1.0


def test_explain_decodes_for_a_few_items(endpoint):
    url, _ = endpoint
    results = post(url, {"query": "phone case", "items": ITEMS, "explain": True}).json()["results"]
    assert [("explanation" in r) for r in results] == [True, True, False]


def test_health_and_docs_routes(endpoint):
    url, _ = endpoint
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["beta"] == 0.5 and health["model"]["format"] == "post_cot"
    assert health["decision"] == "CumPT beta=0.5"
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert "/v1/relevance" in spec["paths"] and httpx.get(f"{url}/docs", timeout=10).status_code == 200


def test_request_metrics_reach_ray_prometheus_endpoint(endpoint, ray_cluster):
    """The app's counters are exported where an operator scrapes them: the node's Prometheus
    endpoint counts the requests this test makes (the export runs every few seconds)."""
    url, _ = endpoint
    port = ray_cluster._private.worker.global_worker.node.metrics_export_port

    def scraped() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.split("{")[0].split(" ")[0] in ("ray_taosr_items", "ray_taosr_items_total")
        )

    before = scraped()
    for _ in range(3):
        assert post(url, {"query": "phone case", "items": ITEMS[:2]}).status_code == 200
    deadline = time.time() + 60
    while scraped() < before + 6 and time.time() < deadline:
        time.sleep(2)
    assert scraped() >= before + 6, "six scored items never showed up in taosr_items on the metrics endpoint"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"\xff\xfe", 400),
        (b"{not json", 400),
        ({"query": "q", "items": []}, 422),
        ({"query": "q", "items": [{"id": "a"}]}, 422),
        ({"query": "q", "items": [{"id": "a", "title": "t", "price": "cheap"}]}, 422),
        ({"query": "q", "items": ITEMS, "unknown": 1}, 422),
        ({"query": "q\x00", "items": ITEMS}, 422),
        ({"query": "q", "items": [{"id": str(i), "title": "t"} for i in range(51)]}, 422),
        (b"{" + b" " * 1_000_001 + b"}", 413),
    ],
)
def test_bad_input_over_http(endpoint, body, status):
    url, _ = endpoint
    response = post(url, body)
    assert response.status_code == status and response.json()["detail"]


def test_bounded_load_sixteen_clients_no_errors(endpoint):
    url, _ = endpoint
    deadline = time.time() + 20
    items = [dict(item, id=f"{item['id']}{n}") for n in range(4) for item in ITEMS]  # 12 items a request
    body = json.dumps({"query": "phone case not pink", "items": items})

    def client(_):
        ok = errors = 0
        with httpx.Client(timeout=60) as session:
            while time.time() < deadline:
                response = session.post(
                    f"{url}/v1/relevance",
                    content=body,
                    headers={"content-type": "application/json", "x-api-key": API_KEY},
                )
                if response.status_code == 200 and len(response.json()["results"]) == 12:
                    ok += 1
                else:
                    errors += 1
        return ok, errors

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(client, range(16)))
    assert sum(e for _, e in outcomes) == 0
    assert sum(o for o, _ in outcomes) >= 16
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_relevance_needs_a_known_api_key_and_health_does_not(endpoint):
    url, _ = endpoint
    body = {"query": "phone case", "items": ITEMS[:1]}
    missing = post(url, body, key=None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert post(url, body, key="not-a-key").status_code == 401
    assert post(url, body, key="old-key").status_code == 200  # every listed key works (rotation)
    assert httpx.post(f"{url}/v1/relevance", json=body, headers={"x-api-key": API_KEY}, timeout=60).status_code == 200
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_an_overloaded_ingress_sheds_load_with_503(endpoint, tiny_model):
    """A second app that lets one request wait on the model: of twelve simultaneous requests
    some are turned away at once with the ingress's own 503 (JSON, Retry-After), the rest are
    answered; Serve's queue bound (one in progress past four) may shed some too, with its 503."""
    from ray import serve

    from taosr.serve.app import build_app

    url, model = endpoint
    app = build_app(
        {
            "model_path": model,
            "engine": "hf",
            "dtype": "float32",
            "max_ongoing_requests": 4,
            "max_queued_requests": 1,
            "max_scoring_requests": 1,
            "retry_after_s": 2,
            "limits": {"max_items": 200},
        }
    )
    serve.run(app, name="overload", route_prefix="/overload", blocking=False)
    items = [dict(ITEMS[0], id=str(n)) for n in range(200)]
    deadline = time.time() + 180
    while httpx.get(f"{url}/overload/healthz", timeout=10).status_code != 200:
        assert time.time() < deadline, "the overload app never became healthy"
        time.sleep(2)

    def call(_):
        return httpx.post(f"{url}/overload/v1/relevance", json={"query": "phone case", "items": items}, timeout=120)

    try:
        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(call, range(12)))
    finally:
        serve.delete("overload")
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1, statuses
    ours = [r for r in responses if r.status_code == 503 and r.headers.get("retry-after") == "2"]
    assert ours, statuses
    assert all("overloaded" in r.json()["detail"] for r in ours)


def test_a_chunked_body_past_the_limit_is_refused_while_it_streams(endpoint):
    """No Content-Length: the ingress counts the bytes as they arrive and answers 413."""
    url, _ = endpoint

    def chunks():
        yield b'{"query": "q", "items": ['
        for _ in range(200):
            yield b'{"id": "x", "title": "' + b"t" * 10_000 + b'"},'

    response = httpx.post(
        f"{url}/v1/relevance",
        content=chunks(),
        timeout=60,
        headers={"content-type": "application/json", "x-api-key": API_KEY},
    )
    assert response.status_code == 413 and "while streaming" in response.json()["detail"]


def test_requests_whose_clients_left_or_cannot_finish_in_time_never_reach_the_engine(endpoint, tmp_path):
    """Serve cancels a request when its client disconnects; the replica drops cancelled requests
    from its queue, so four abandoned requests queued behind one slow batch cost no engine time.
    Then, with the engine's rate known, a request that could not be scored within the app's
    0.5 s deadline gets 503 at once. SmolLM2-135M on the transformers engine makes a 50-item
    batch take seconds, and a one-item batch bound keeps the four waiting behind it."""
    from ray import serve

    from taosr.models import export_model, resolve_model
    from taosr.serve.app import build_app

    from conftest import MODEL_CACHE

    url, _ = endpoint
    model = export_model(resolve_model("smollm2-135m", MODEL_CACHE), str(tmp_path / "model"))
    serve.run(
        build_app(
            {
                "model_path": model,
                "engine": "hf",
                "dtype": "float32",
                "max_batch_items": 1,
                "request_deadline_s": 0.5,
                "retry_after_s": 3,
                "limits": {"max_items": 50},
            }
        ),
        name="patience",
        route_prefix="/patience",
        blocking=False,
    )
    deadline = time.time() + 180
    while httpx.get(f"{url}/patience/healthz", timeout=10).status_code != 200:
        assert time.time() < deadline, "the patience app never became healthy"
        time.sleep(2)
    items = [dict(ITEMS[0], id=str(n)) for n in range(50)]

    def call(timeout_s: float):
        try:
            return httpx.post(
                f"{url}/patience/v1/relevance", json={"query": "phone case", "items": items}, timeout=timeout_s
            )
        except httpx.TimeoutException:
            return "gave up"

    model_handle = serve.get_deployment_handle("LevelModel", "patience")
    try:
        with ThreadPoolExecutor(5) as pool:
            kept = pool.submit(call, 300)  # the replica knows no rate yet: scored whatever it takes
            time.sleep(0.5)  # the kept request's batch is on the engine
            gone = [pool.submit(call, 1.0) for _ in range(4)]
            assert [future.result() for future in gone] == ["gave up"] * 4
            assert kept.result().status_code == 200
        deadline = time.time() + 30
        while (stats := model_handle.stats.remote().result())["requests_dropped"] < 4 and time.time() < deadline:
            time.sleep(1)
        assert {k: stats[k] for k in ("batches", "items_scored", "requests_dropped")} == {
            "batches": 1,
            "items_scored": 50,
            "requests_dropped": 4,
        }

        started = time.time()
        late = call(300)  # 50 items at the measured rate take seconds: past the 0.5 s deadline
        assert late.status_code == 503 and late.headers["retry-after"] == "3", late.text
        assert "deadline" in late.json()["detail"] and time.time() - started < 5
        assert model_handle.stats.remote().result()["requests_late"] == 1
    finally:
        serve.delete("patience")
