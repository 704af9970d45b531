"""The serving app's settings (serve.yaml's args): typed, documented, and refused with the cause
before a replica loads an engine (no Ray)."""

from pathlib import Path

import pytest
import yaml

from taosr.config import describe
from taosr.serve.args import ServeArgs

ROOT = Path(__file__).resolve().parent.parent


def test_the_repository_serve_yaml_holds_valid_args():
    served = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    args = served["applications"][0]["args"]
    settings = ServeArgs.from_dict({**args, "model_path": "runs/tiny/export/model"})
    assert settings.kv_block_size == args.get("kv_block_size", 32)


def test_every_field_has_a_help_text():
    rows = describe(ServeArgs, prefix="serve.yaml args.")
    assert len(rows) == len(ServeArgs.__dataclass_fields__)
    assert [key for key, _, text in rows if not text] == []


def test_an_unknown_key_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown key\\(s\\) max_batch_itmes; known: .*max_batch_items"):
        ServeArgs.from_dict({"model_path": "m", "max_batch_itmes": 64})


def test_values_out_of_range_are_all_named_at_once():
    with pytest.raises(ValueError) as refused:
        ServeArgs.from_dict(
            {"model_path": "m", "beta": 1.5, "engine": "tgi", "max_batch_items": 0, "replica_niceness": 40}
        )
    message = str(refused.value)
    for part in ("beta 1.5 must be in (0, 1]", "engine 'tgi'", "max_batch_items 0 must be >= 1", "replica_niceness 40"):
        assert part in message
    with pytest.raises(ValueError, match="model_path is required"):
        ServeArgs.from_dict({})
