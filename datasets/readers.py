"""Ray Data readers for query-item logs: JSONL, Parquet, CSV and TSV, local paths or s3:// URIs.

Both produce the same *raw record* per input row: ``source`` (file path), ``line`` (1-based line
or row number in that file), ``raw`` (the row as JSON text) and ``error`` (a reason code when the
row could not even be decoded, else None). Nothing is dropped here: a line that does not decode
in the configured encoding, is not JSON, or (CSV) has the wrong number of fields becomes a record
with an error, so validation can count and quarantine it. Ray's own ``read_json`` and
``read_csv`` would fail the whole read on such a line. A CSV/TSV row becomes an object keyed by
the header, with empty fields left out (missing, as in JSON).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from typing import TYPE_CHECKING, Iterator

from ray.data.block import Block
from ray.data.datasource import FileBasedDatasource

from taosr.datasets.storage import S3_MAX_ATTEMPTS, filesystem_for  # noqa: F401 - read paths use them

if TYPE_CHECKING:
    import pyarrow

RAW_COLUMNS = ("source", "line", "raw", "error")
_BLOCK_ROWS = 4096
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_TSV_SUFFIXES = (".tsv", ".tsv.gz", ".tab")
FORMATS = ("jsonl", "parquet", "csv", "tsv")


def _block(rows: list[dict]) -> Block:
    import pyarrow as pa

    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("source", pa.string()),
                ("line", pa.int64()),
                ("raw", pa.string()),
                ("error", pa.string()),
            ]
        ),
    )


class JsonLinesRecords(FileBasedDatasource):
    """One raw record per non-blank line of each JSONL file, read as a stream."""

    _FILE_EXTENSIONS = ["jsonl", "json", "ndjson", "gz"]

    def __init__(self, paths, encoding: str = "utf-8", **kwargs):
        super().__init__(paths, **kwargs)
        codecs.lookup(encoding)  # an unknown encoding fails here, in the driver, with its name
        self.encoding = encoding

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
                record = _line_record(path, number, line, self.encoding)
                if record:
                    rows.append(record)
            if len(rows) >= _BLOCK_ROWS:
                yield _block(rows)
                rows = []
        if pending:
            record = _line_record(path, number + 1, pending, self.encoding)
            if record:
                rows.append(record)
        if rows:
            yield _block(rows)


def _line_record(path: str, number: int, line: bytes, encoding: str = "utf-8") -> dict | None:
    line = line.rstrip(b"\r")
    if not line.strip():
        return None
    try:
        text = line.decode(encoding)
    except UnicodeDecodeError:
        return {
            "source": path,
            "line": number,
            "raw": line.decode("utf-8", "replace")[:4000],
            "error": "bad_encoding:line",
        }
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return {"source": path, "line": number, "raw": text[:4000], "error": "malformed_json"}
    return {"source": path, "line": number, "raw": text, "error": None}


class CsvRecords(FileBasedDatasource):
    """One raw record per data row of each CSV/TSV file (the first row is the header), read as a
    stream in the configured encoding. ``line`` is the 1-based data row (the header is row 0)."""

    _FILE_EXTENSIONS = ["csv", "tsv", "tab", "gz"]

    def __init__(self, paths, delimiter: str = ",", encoding: str = "utf-8", **kwargs):
        super().__init__(paths, **kwargs)
        codecs.lookup(encoding)
        self.delimiter, self.encoding = delimiter, encoding

    def _read_stream(self, f: "pyarrow.NativeFile", path: str) -> Iterator[Block]:
        # Undecodable bytes become lone surrogates, so one bad field quarantines its row only.
        reader = csv.reader(_decoded_lines(f, self.encoding), delimiter=self.delimiter)
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip().lstrip("\ufeff") for name in header]
        if len(set(header)) != len(header) or not all(header):
            raise ValueError(f"{path}: the header row must name every column once; got {header}")
        rows: list[dict] = []
        for number, fields in enumerate(reader, start=1):
            if not any(field.strip() for field in fields):
                continue
            rows.append(_csv_record(path, number, header, fields))
            if len(rows) >= _BLOCK_ROWS:
                yield _block(rows)
                rows = []
        if rows:
            yield _block(rows)


def _decoded_lines(f, encoding: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
    pending = ""
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _csv_record(path: str, number: int, header: list[str], fields: list[str]) -> dict:
    if len(fields) != len(header):
        raw = json.dumps({**dict(zip(header, fields)), "_fields": fields}, ensure_ascii=True)[:4000]
        return {
            "source": path,
            "line": number,
            "raw": raw,
            "error": f"malformed_csv:{len(fields)}_fields_for_{len(header)}_columns",
        }
    row = {}
    for name, value in zip(header, fields):
        value = value.strip()
        if not value:
            continue  # an empty field is a missing value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(dict(zip(header, fields)), ensure_ascii=True)[:4000]
            return {"source": path, "line": number, "raw": text, "error": f"bad_encoding:{name}"}
        row[name] = value
    return {"source": path, "line": number, "raw": json.dumps(row, ensure_ascii=False), "error": None}


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
    """'jsonl', 'parquet', 'csv' or 'tsv', from ``declared`` or the path's suffix."""
    if declared in FORMATS:
        return declared
    if declared != "auto":
        raise ValueError(f"unknown log format {declared!r}; use auto, {', '.join(FORMATS)}")
    lowered = path.rstrip("/").lower()
    for fmt, suffixes in (
        ("parquet", _PARQUET_SUFFIXES),
        ("jsonl", _JSONL_SUFFIXES),
        ("csv", _CSV_SUFFIXES),
        ("tsv", _TSV_SUFFIXES),
    ):
        if lowered.endswith(suffixes):
            return fmt
    if lowered.endswith(".zip"):
        raise ValueError(f"{path!r} is a zip archive: unzip it first (Ray reads .gz logs as they are)")
    raise ValueError(f"cannot tell the format of {path!r} from its name; pass format= one of {', '.join(FORMATS)}")


def read_raw_records(path: str, fmt: str = "auto", s3_endpoint: str = "", encoding: str = "utf-8"):
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
    if resolved == "parquet":
        datasource = ParquetRecords(path, filesystem=filesystem, file_extensions=ParquetRecords._FILE_EXTENSIONS)
    elif resolved in ("csv", "tsv"):
        datasource = CsvRecords(
            path,
            delimiter="," if resolved == "csv" else "\t",
            encoding=encoding,
            filesystem=filesystem,
            file_extensions=CsvRecords._FILE_EXTENSIONS,
        )
    else:
        datasource = JsonLinesRecords(
            path, encoding=encoding, filesystem=filesystem, file_extensions=JsonLinesRecords._FILE_EXTENSIONS
        )
    return ray.data.read_datasource(datasource)


def _format_of_folder(path: str, filesystem) -> str:
    """The format of a folder's files; a folder must not mix formats."""
    from pyarrow import fs as pafs

    local = filesystem or pafs.LocalFileSystem()
    base = path[len("s3://") :] if path.startswith("s3://") else os.path.abspath(path)
    infos = local.get_file_info(pafs.FileSelector(base, recursive=True))
    formats = set()
    for info in infos:
        if info.type == pafs.FileType.File and not os.path.basename(info.path).startswith((".", "_")):
            try:
                formats.add(detect_format(info.path))
            except ValueError:
                continue
    if len(formats) != 1:
        raise ValueError(
            f"{path!r} holds {sorted(formats) or 'no'} log files; it needs exactly one format ({', '.join(FORMATS)})"
        )
    return formats.pop()


def log_columns(path: str, fmt: str = "auto", s3_endpoint: str = "", encoding: str = "utf-8") -> set[str]:
    """The column names of a file or folder of logs, from its first log file alone (a Parquet
    schema, a CSV/TSV header, the keys of the first JSONL records), without Ray: what a preflight
    checks before a run spends anything on the logs."""
    import csv
    import gzip
    import io
    import json

    from pyarrow import fs as pafs

    filesystem = filesystem_for(path, s3_endpoint) or pafs.LocalFileSystem()
    base = path[len("s3://") :] if path.startswith("s3://") else os.path.abspath(path)
    info = filesystem.get_file_info(base)
    files = [base]
    if info.type == pafs.FileType.Directory:
        found = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
        files = sorted(
            i.path
            for i in found
            if i.type == pafs.FileType.File and not os.path.basename(i.path).startswith((".", "_"))
        )
    elif info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{path}: no such log file or folder")
    resolved = (
        detect_format(path, fmt)
        if fmt != "auto" or info.type == pafs.FileType.File
        else _format_of_folder(path, filesystem or None)
    )
    files = [f for f in files if fmt != "auto" or info.type == pafs.FileType.File or _has_format(f, resolved)]
    if not files:
        raise FileNotFoundError(f"{path}: no {resolved} log files")
    with filesystem.open_input_file(files[0]) as handle:
        head = handle.read(4 << 20)  # a header, a schema or the first records fit in 4 MiB
    if resolved == "parquet":
        import pyarrow.parquet as pq

        with filesystem.open_input_file(files[0]) as handle:
            return set(pq.ParquetFile(handle).schema_arrow.names)
    if files[0].endswith(".gz"):
        head = gzip.GzipFile(fileobj=io.BytesIO(head)).read(4 << 20)
    text = head.decode(encoding, errors="replace")
    if resolved in ("csv", "tsv"):
        return set(next(csv.reader(io.StringIO(text), delimiter="," if resolved == "csv" else "\t"), []))
    columns: set[str] = set()
    for line in text.splitlines()[:100]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            columns |= set(record)
    return columns


def _has_format(path: str, fmt: str) -> bool:
    try:
        return detect_format(path) == fmt
    except ValueError:
        return False
