"""Where a dataset lives: a local path or an object-store URI (s3://, gs://), through pyarrow's
filesystems, with atomic publication where the filesystem has it."""

import re
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
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def publish(self, staged: str, final: str) -> None:
        """Move a staged file to its final name (no-op where staging used the final name)."""
        if staged != final:
            self.fs.move(staged, final)

    def staging_name(self, final: str) -> str:
        """Where to write a file before publication: a temporary name, or the final one."""
        return f"{final}.partial" if self.atomic_rename else final

    def delete(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_file(path)
