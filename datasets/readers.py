"""Ray Data readers for query-item logs: JSONL and Parquet, local paths or s3:// URIs.

Both produce the same *raw record* per input row: ``source`` (file path), ``line`` (1-based line
or row number in that file), ``raw`` (the row as JSON text) and ``error`` (a reason code when the
row could not even be decoded, else None). Nothing is dropped here: a line that is not UTF-8 or
not JSON becomes a record with an error, so validation can count and quarantine it. Ray's own
``read_json`` would fail the whole read on such a line.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Iterator

from ray.data.block import Block
from ray.data.datasource import FileBasedDatasource

if TYPE_CHECKING:
    import pyarrow

RAW_COLUMNS = ("source", "line", "raw", "error")
_BLOCK_ROWS = 4096
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _block(rows: list[dict]) -> Block:
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("source", pa.string()), ("line", pa.int64()), ("raw", pa.string()), ("error", pa.string()),
    ]))


class JsonLinesRecords(FileBasedDatasource):
    """One raw record per non-blank line of each JSONL file, read as a stream."""

    _FILE_EXTENSIONS = ["jsonl", "json", "ndjson", "gz"]

    def _read_stream(self, f: "pyarrow.NativeFile", path: str) -> Iterator[Block]:
        rows: list[dict] = []
        pending = b""
        number = 0
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                number += 1
                record = _line_record(path, number, line)
                if record:
                    rows.append(record)
            if len(rows) >= _BLOCK_ROWS:
                yield _block(rows)
                rows = []
        if pending:
            record = _line_record(path, number + 1, pending)
            if record:
                rows.append(record)
        if rows:
            yield _block(rows)


def _line_record(path: str, number: int, line: bytes) -> dict | None:
    line = line.rstrip(b"\r")
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return {"source": path, "line": number, "raw": line.decode("utf-8", "replace")[:4000], "error": "bad_encoding:line"}
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return {"source": path, "line": number, "raw": text[:4000], "error": "malformed_json"}
    return {"source": path, "line": number, "raw": text, "error": None}


class ParquetRecords(FileBasedDatasource):
    """One raw record per Parquet row, streamed batch by batch with its row number."""

    _FILE_EXTENSIONS = ["parquet", "pq"]

    def _open_input_source(self, filesystem, path: str, **open_args) -> "pyarrow.NativeFile":
        return filesystem.open_input_file(path)  # Parquet needs random access to its footer

    def _read_stream(self, f: "pyarrow.NativeFile", path: str) -> Iterator[Block]:
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=_BLOCK_ROWS):
            rows = []
            for row in batch.to_pylist():
                number += 1
                error = None
                try:
                    raw = json.dumps(row, ensure_ascii=False, default=_json_default)
                except _BadBytes as bad:
                    raw, error = json.dumps({k: str(v)[:200] for k, v in row.items()}), f"bad_encoding:{bad.field}"
                rows.append({"source": path, "line": number, "raw": raw, "error": error})
            if rows:
                yield _block(rows)


class _BadBytes(ValueError):
    def __init__(self, field: str = "value"):
        super().__init__(field)
        self.field = field


def _json_default(value):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _BadBytes() from error
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def detect_format(path: str, declared: str = "auto") -> str:
    """'jsonl' or 'parquet', from ``declared`` or the path's suffix."""
    if declared in ("jsonl", "parquet"):
        return declared
    if declared != "auto":
        raise ValueError(f"unknown log format {declared!r}; use auto, jsonl or parquet")
    lowered = path.rstrip("/").lower()
    if lowered.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if lowered.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path!r} from its name; pass format=jsonl or format=parquet")


S3_MAX_ATTEMPTS = 8  # per request; TAOSR_S3_MAX_ATTEMPTS overrides


def filesystem_for(path: str, s3_endpoint: str = ""):
    """A pyarrow filesystem for s3:// paths (honouring an endpoint override), else None."""
    if not path.startswith("s3://"):
        return None
    from pyarrow import fs

    endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    kwargs = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    # The filesystem is pickled into Ray workers, whose environment may lack the driver's keys;
    # without keys in the environment, the default chain (an instance role) applies there.
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                      session_token=os.environ.get("AWS_SESSION_TOKEN"))
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    # Transient errors (5xx, throttling, dropped connections) are retried by the AWS SDK's
    # standard strategy with backoff; the strategy travels with the pickled filesystem.
    attempts = int(os.environ.get("TAOSR_S3_MAX_ATTEMPTS", S3_MAX_ATTEMPTS))
    return fs.S3FileSystem(retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts), **kwargs)


def read_raw_records(path: str, fmt: str = "auto", s3_endpoint: str = ""):
    """A Ray Dataset of raw records (see module doc) from a file or a folder of logs."""
    import ray

    filesystem = filesystem_for(path, s3_endpoint)
    if fmt == "auto":
        try:
            resolved = detect_format(path)
        except ValueError:
            resolved = _format_of_folder(path, filesystem)
    else:
        resolved = detect_format(path, fmt)
    source_cls = ParquetRecords if resolved == "parquet" else JsonLinesRecords
    datasource = source_cls(path, filesystem=filesystem, file_extensions=source_cls._FILE_EXTENSIONS)
    return ray.data.read_datasource(datasource)


def _format_of_folder(path: str, filesystem) -> str:
    """The format of a folder's files; a folder must not mix formats."""
    from pyarrow import fs as pafs

    local = filesystem or pafs.LocalFileSystem()
    base = path[len("s3://"):] if path.startswith("s3://") else os.path.abspath(path)
    infos = local.get_file_info(pafs.FileSelector(base, recursive=True))
    formats = set()
    for info in infos:
        if info.type == pafs.FileType.File and not os.path.basename(info.path).startswith((".", "_")):
            try:
                formats.add(detect_format(info.path))
            except ValueError:
                continue
    if len(formats) != 1:
        raise ValueError(f"{path!r} holds {sorted(formats) or 'no'} log files; it needs exactly one format (jsonl or parquet)")
    return formats.pop()
