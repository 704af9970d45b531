"""Artifacts on a real S3 API (moto's server) behind a proxy that fails every third request
with 503 SlowDown: the pipeline's storage calls and a Ray Data Parquet round trip complete
through the AWS SDK's retries, and fail without them."""

import boto3
import pytest

from taosr.datasets.storage import exists, read_text, write_dataset, write_json

pytestmark = pytest.mark.slow


@pytest.fixture
def flaky(s3_endpoint):
    from tests.flaky_proxy import FlakyProxy

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="flaky")
    proxy = FlakyProxy(s3_endpoint, fail_every=3)
    yield proxy
    proxy.close()


def test_storage_completes_through_transient_errors(flaky, ray_cluster):
    import ray

    write_json("s3://flaky/run/eval/metrics.json", {"macro_f1": 0.5}, flaky.url)
    assert exists("s3://flaky/run/eval/metrics.json", flaky.url)
    assert '"macro_f1": 0.5' in read_text("s3://flaky/run/eval/metrics.json", flaky.url)
    rows = [{"id": str(i), "label": 1 + i % 4} for i in range(200)]
    write_dataset(ray.data.from_items(rows, override_num_blocks=4), "s3://flaky/run/data/accepted", flaky.url)
    from taosr.datasets.readers import filesystem_for

    back = ray.data.read_parquet(
        "s3://flaky/run/data/accepted", filesystem=filesystem_for("s3://flaky/", flaky.url)
    ).take_all()
    assert sorted(int(r["id"]) for r in back) == list(range(200))
    assert flaky.failed >= 3, f"the proxy injected only {flaky.failed} errors in {flaky.requests} requests"


@pytest.mark.parametrize("attempts, fails", [(1, True), (2, False)])
def test_the_attempt_count_is_read_from_the_environment(flaky, monkeypatch, attempts, fails):
    """One injected error on the upload: one attempt surfaces it, two ride it out. Were TAOSR_S3_MAX_ATTEMPTS
    not read, the default 8 attempts would make the first case pass too."""
    monkeypatch.setenv("TAOSR_S3_MAX_ATTEMPTS", str(attempts))
    flaky.fail_every, flaky.fail_next = 0, 1
    if fails:
        with pytest.raises(OSError, match="503|SlowDown|reduce your request rate"):
            write_json("s3://flaky/run/x.json", {"a": 1}, flaky.url)
    else:
        write_json("s3://flaky/run/x.json", {"a": 1}, flaky.url)
        assert '"a": 1' in read_text("s3://flaky/run/x.json", flaky.url)
    assert flaky.failed == 1
