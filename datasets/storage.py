"""Small file I/O over local paths and s3:// URIs (through pyarrow's filesystems)."""

from __future__ import annotations

import json
import os
from pathlib import Path


S3_MAX_ATTEMPTS = 8  # per request; TAOSR_S3_MAX_ATTEMPTS overrides
PROBE_TIMEOUT_S = 5.0  # a reachability probe's connect and request timeout


def filesystem_for(path: str, s3_endpoint: str = "", attempts: int | None = None, timeout_s: float | None = None):
    """A pyarrow filesystem for s3:// paths (honouring an endpoint override), else None.
    ``attempts`` and ``timeout_s`` (connect and request, seconds) default to the SDK's retries
    and timeouts, which a run wants for transient errors."""
    if not path.startswith("s3://"):
        return None
    from pyarrow import fs

    endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    # The filesystem is pickled into Ray workers, whose environment may lack the driver's keys;
    # without keys in the environment, the default chain (an instance role) applies there.
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs.update(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            session_token=os.environ.get("AWS_SESSION_TOKEN"),
        )
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    # Transient errors (5xx, throttling, dropped connections) are retried by the AWS SDK's
    # standard strategy with backoff; the strategy travels with the pickled filesystem.
    if attempts is None:
        attempts = int(os.environ.get("TAOSR_S3_MAX_ATTEMPTS", S3_MAX_ATTEMPTS))
    if timeout_s is not None:
        kwargs.update(connect_timeout=timeout_s, request_timeout=timeout_s)
    return fs.S3FileSystem(retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts), **kwargs)


def unreachable(path: str, s3_endpoint: str = "") -> str:
    """Why the store behind an s3:// path cannot be reached at all (no DNS, no route, no answer
    in PROBE_TIMEOUT_S), from one try; "" where it answers, even with access denied, and for
    local paths. Checks ask this first: with no network the SDK's retries take about 33 s for
    each request, and a plan reads a manifest per stage."""
    filesystem = filesystem_for(path, s3_endpoint, attempts=1, timeout_s=PROBE_TIMEOUT_S)
    if filesystem is None:
        return ""
    try:
        filesystem.get_file_info(path[len("s3://") :])
    except OSError as error:
        message = str(error)
        if "NETWORK_CONNECTION" in message or "curlCode" in message or "timed out" in message.lower():
            return message
    return ""


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if base.startswith("s3://") else str(Path(base, *parts))


def filesystem_and_path(path: str, s3_endpoint: str = ""):
    filesystem = filesystem_for(path, s3_endpoint)
    if filesystem is None:
        from pyarrow import fs

        return fs.LocalFileSystem(), os.path.abspath(path)
    return filesystem, path[len("s3://") :]


def remove_tree(path: str, s3_endpoint: str = "") -> None:
    """Delete a folder and everything under it; nothing happens when it does not exist."""
    from pyarrow import fs

    filesystem, inner = filesystem_and_path(path, s3_endpoint)
    if filesystem.get_file_info(inner).type != fs.FileType.NotFound:
        filesystem.delete_dir(inner)


def absolute(path: str) -> str:
    """Local paths made absolute (Ray workers run in other directories); URIs unchanged."""
    return path if "://" in path else os.path.abspath(path)


def exists(path: str, s3_endpoint: str = "") -> bool:
    from pyarrow import fs

    filesystem, inner = filesystem_and_path(path, s3_endpoint)
    return filesystem.get_file_info(inner).type != fs.FileType.NotFound


def write_text(path: str, text: str, s3_endpoint: str = "") -> None:
    filesystem, inner = filesystem_and_path(path, s3_endpoint)
    parent = inner.rsplit("/", 1)[0]
    if parent:
        filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(inner) as stream:
        stream.write(text.encode("utf-8"))


def read_text(path: str, s3_endpoint: str = "") -> str:
    filesystem, inner = filesystem_and_path(path, s3_endpoint)
    with filesystem.open_input_stream(inner) as stream:
        return stream.read().decode("utf-8")


def write_json(path: str, value, s3_endpoint: str = "") -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", s3_endpoint)


def write_jsonl(path: str, rows, s3_endpoint: str = "") -> int:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    write_text(path, "\n".join(lines) + "\n", s3_endpoint)
    return len(lines)


def write_dataset(ds, path: str, s3_endpoint: str = "") -> None:
    """Write a Ray Dataset as Parquet files under ``path`` (local or s3://), replacing what a
    previous run left there (appending would silently duplicate rows on a rerun)."""
    from ray.data import SaveMode

    ds.write_parquet(path, filesystem=filesystem_for(path, s3_endpoint), mode=SaveMode.OVERWRITE)


def copy_tree(source: str, target: str, s3_endpoint: str = "") -> None:
    """Copy a folder between any two of local paths and s3:// URIs."""
    from pyarrow import fs

    source_fs, source_path = filesystem_and_path(source, s3_endpoint)
    target_fs, target_path = filesystem_and_path(target, s3_endpoint)
    target_fs.create_dir(target_path, recursive=True)
    fs.copy_files(source_path, target_path, source_filesystem=source_fs, destination_filesystem=target_fs)


def listing_hash(path: str, s3_endpoint: str = "", missing: str = "no files under") -> str:
    """A hash of the files under ``path`` (a file or a folder, local or s3://): each one's path
    relative to ``path``, size and modification time. It changes when a file is added, removed
    or replaced, without reading any bytes. FileNotFoundError ("<missing> <path>") when there
    are none."""
    import hashlib

    from pyarrow import fs

    filesystem, root = filesystem_and_path(path, s3_endpoint)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.File:
        files = [info]
    else:
        files = [
            i
            for i in filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
            if i.type == fs.FileType.File
        ]
    if not files:
        raise FileNotFoundError(f"{missing} {path}")
    listing = sorted(f"{i.path[len(root) :]}\0{i.size}\0{i.mtime_ns}" for i in files)
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]


def local_dir(path: str, s3_endpoint: str = "") -> str:
    """A local folder holding ``path``: the path itself when it is local, else a copy of the
    s3:// folder in this node's cache (``TAOSR_S3_CACHE``, default ~/.cache/taosr/s3), fetched
    once per version of the folder (its files' names, sizes and modification times). What loads
    a model (transformers, vLLM, DeepSpeed) reads local folders only; each actor calls this on
    the node it runs on. The endpoint defaults to AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL."""
    if not path.startswith("s3://"):
        return path
    import hashlib
    import tempfile

    from pyarrow import fs

    filesystem, root = filesystem_and_path(path, s3_endpoint)
    version = listing_hash(path, s3_endpoint)
    cache = Path(os.path.expanduser(os.environ.get("TAOSR_S3_CACHE", "~/.cache/taosr/s3")))
    target = cache / hashlib.sha256(path.rstrip("/").encode()).hexdigest()[:16] / version
    marker = target / ".taosr-complete"
    if marker.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(dir=target.parent, prefix=".partial-")
    fs.copy_files(root, staging, source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
    Path(staging, ".taosr-complete").write_text(path)
    try:
        os.rename(staging, target)  # atomic: a reader sees no folder or a whole one
    except OSError:  # another process on this node finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def read_parquet(path: str, s3_endpoint: str = ""):
    """A Ray Dataset of a run's Parquet artifact (local or s3://, through the same filesystem,
    endpoint and retry policy as every other storage call)."""
    import ray

    return ray.data.read_parquet(path, filesystem=filesystem_for(path, s3_endpoint))


def copy_small_files(
    source: str, target: str, s3_endpoint: str = "", suffixes: tuple = (".json",), max_bytes: int = 50_000_000
) -> int:
    """Copy the files under ``source`` whose names end in one of ``suffixes`` (and that are
    under ``max_bytes``) to a local folder, keeping their relative paths: the metrics and
    summaries of a run without its weights and datasets. Returns how many were copied."""
    from pyarrow import fs

    filesystem, root = filesystem_and_path(source, s3_endpoint)
    copied = 0
    for info in filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != fs.FileType.File or not info.path.endswith(suffixes) or info.size > max_bytes:
            continue
        destination = Path(target, info.path[len(root) :].lstrip("/"))
        destination.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(info.path) as stream:
            destination.write_bytes(stream.read())
        copied += 1
    return copied
