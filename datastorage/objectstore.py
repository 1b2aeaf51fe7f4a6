"""Objects outside the database: `file:///DIR` or `s3://BUCKET/PREFIX` behind one small interface.

Used by checkpoint publication (docs/tamper-evident-log.md) and meant for archives
(docs/compliance.md). Names are relative,
slash-separated paths (`checkpoint`, `checkpoints/42`). Writes are whole-object and atomic: a file
is written beside its final name, flushed to disk and renamed over it; an S3 PUT replaces the
object at once. The calls block: async callers run them in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlsplit


class ObjectStoreError(ValueError):
    """A bad object-store URL or object name."""


class ObjectStore(Protocol):
    url: str

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def list(self, prefix: str = "") -> list[str]: ...


def _check_name(name: str) -> str:
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or any(p in ("..", ".") for p in parts):
        raise ObjectStoreError(f"object name {name!r} must be a relative path without '..'")
    return name


class DirectoryStore:
    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def put(self, name: str, data: bytes) -> None:
        target = self.root / _check_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / _check_name(name)).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        names = (
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )
        return sorted(name for name in names if name.startswith(prefix))


class S3Store:
    def __init__(self, url: str, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        import boto3  # imported here: only S3 users pay for it
        from botocore.config import Config

        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}),
        )

    def _key(self, name: str) -> str:
        name = _check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def get(self, name: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except self.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read()

    def list(self, prefix: str = "") -> list[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        names = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start + prefix):
            names += [item["Key"][len(start) :] for item in page.get("Contents", [])]
        return sorted(names)


def open_store(url: str, *, s3_endpoint_url: str | None = None) -> ObjectStore:
    """The store a `file:///DIR` or `s3://BUCKET/PREFIX` URL names."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.path and not parts.netloc:
        return DirectoryStore(url, Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc:
        return S3Store(url, parts.netloc, unquote(parts.path), s3_endpoint_url)
    raise ObjectStoreError("must be file:///absolute/dir or s3://bucket/prefix")
