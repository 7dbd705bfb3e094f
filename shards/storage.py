"""Where a dataset lives: a local path or an object-store URI (s3://, gs://), through pyarrow's
filesystems, with atomic publication where the filesystem has it."""

import os
import re
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

_SECRET_PARAMETER = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)


def redact(uri: str) -> str:
    """`uri` fit for files and logs: a user:password@ part and the values of query parameters
    that name a key, secret, token, password or credential are replaced by ***."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if "@" in parts.netloc:
        netloc = f"***@{netloc}"
    query = urlencode([(name, "***" if _SECRET_PARAMETER.search(name) else value)
                       for name, value in parse_qsl(parts.query, keep_blank_values=True)],
                      safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Location:
    """A filesystem and a root path on it."""

    fs: pafs.FileSystem
    root: str

    @classmethod
    def parse(cls, uri_or_path: str) -> "Location":
        if "://" in uri_or_path:
            fs, root = pafs.FileSystem.from_uri(uri_or_path)
        else:
            fs, root = pafs.LocalFileSystem(), str(uri_or_path)
        return cls(fs, root.rstrip("/"))

    @property
    def atomic_rename(self) -> bool:
        """Local renames are atomic; object stores write under the final name instead."""
        return self.fs.type_name == "local"

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def makedirs(self, path: str) -> None:
        self.fs.create_dir(path, recursive=True)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file; locally through a staged name, synced and renamed, so a reader
        sees the old file or the new one, never a torn one."""
        staged = self.staging_name(path)
        with self.fs.open_output_stream(staged) as stream:
            stream.write(data)
        self.publish(staged, path)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def publish(self, staged: str, final: str) -> None:
        """Move a staged file to its final name (no-op where staging used the final name).
        Locally the file's bytes reach the disk before the rename, and the rename before the
        call returns (its folder is synced too)."""
        if staged == final:
            return
        _fsync(staged)
        self.fs.move(staged, final)
        _fsync(os.path.dirname(final) or ".")

    def staging_name(self, final: str) -> str:
        """Where to write a file before publication: a name unique to this attempt (two
        attempts at one shard never write the same file), or the final one on object stores."""
        return f"{final}.{uuid.uuid4().hex[:12]}.partial" if self.atomic_rename else final

    def delete(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_file(path)
