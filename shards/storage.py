"""Where a dataset lives: a local path or an object-store URI (s3://, gs://), through pyarrow's
filesystems, with atomic publication where the filesystem has it. Files are read and written
as the bytes they hold: pyarrow's compression by file extension is turned off (it would inflate
a shard's .tar.gz before its SHA-256 is taken, and gzip it twice where it is written)."""

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from distortions.canonical import each_leaf
from shards.stopping import interrupt_kept, interrupts_held

STAGED_SUFFIX = ".partial"  # a file staged under it is renamed into place when whole
S3_COPY_BYTES = 5 << 30  # the largest object one S3 copy request takes (CopyObject)
S3_PART_BYTES = 256 << 20  # a larger one is copied in parts of this size
_SECRET_PARAMETER = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")  # (a message quotes one in ' or ")


def redact(uri: str) -> str:
    """`uri` fit for files and logs: its user:password part and the values of options that
    name a key, secret, token, password or credential replaced by ***. The authority ends at
    the first '/', '?' or '#' (an '@' after it is the path's); where it holds a ':' but no
    '@' while an '@' follows, a password held an unescaped '/', '#' or '?' (a URI no parser
    reads as meant): everything up to the last '@' is redacted."""
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        rest = "***@" + rest[len(authority.rpartition("@")[0]) + 1:]
    elif ":" in authority and "@" in rest:
        rest = "***@" + rest[rest.rindex("@") + 1:]
    place, mark, options = rest.partition("?")
    if mark:
        options = urlencode([(name, "***" if _SECRET_PARAMETER.search(name) else value)
                             for name, value in parse_qsl(options, keep_blank_values=True)],
                            safe="*")
    return f"{scheme}://{place}{mark}{options}"


def redact_text(text: str) -> str:
    """`text` with each URI in it `redact`ed (a URI ends at white space)."""
    return _URI.sub(lambda found: redact(found.group()), text)


def without_credentials(value):
    """`value` with every URI in its strings, however deep in dicts, lists and tuples,
    `redact`ed: what a run writes into its files (a checkpoint's settings, a summary)."""
    return each_leaf(value, lambda leaf: redact_text(leaf) if isinstance(leaf, str) else leaf)


def canonical_uri(uri: str) -> str:
    """One spelling of an object-store URI, without its credentials: the host without a
    user:password@, the path without a trailing slash, the options (but secret ones) sorted.
    The same data however the URI is spelled, and whichever keys read it (they rotate)."""
    parts = urlsplit(uri)
    options = sorted((name, value) for name, value in parse_qsl(parts.query,
                                                                keep_blank_values=True)
                     if not _SECRET_PARAMETER.search(name))
    return urlunsplit((parts.scheme.lower(), parts.netloc.rpartition("@")[2],
                       parts.path.rstrip("/"), urlencode(options), ""))


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The file at `path` or at one of the folders above it, where `path` is to be a folder
    (or to lie in one), named as `path` names it; None where there is none. Local paths."""
    named = Path(path)
    return next((each for each in (named, *named.parents) if each.is_file()), None)


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A local file written whole or not at all (a checkpoint, a features cache, a results
    file): the block writes a staged file, which reaches the disk, then is renamed into
    place, the rename on the disk before this returns; where the block raises, the staged
    file is removed and `path` left as it was (an interrupt comes out as itself where the
    block's cleanup fails on it: interrupt_kept). The staged file is `path`.partial, created
    exclusively: where one exists (another writer's, or one a killed writer left), a name of
    this writer's own, so that no writer writes into another's."""
    final = os.fspath(path)
    staged = handle = None
    try:
        with interrupts_held(raised_as_it_ends=True):  # one as it is made: it is removed
            staged, handle = _staged_file(final)
        with handle, interrupt_kept():
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, final)
    except BaseException:
        if handle is not None:
            handle.close()
        if staged is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(staged)
        raise
    _fsync(os.path.dirname(final) or ".")


def json_bytes(document, allow_nan: bool = True) -> bytes:
    """A JSON file's text: keys sorted, one value per line (a run file, a result); without
    `allow_nan`, a NaN or infinity raises ValueError rather than be written as JSON has none."""
    return json.dumps(document, sort_keys=True, indent=1, allow_nan=allow_nan).encode()


def write_json_file(path: str | os.PathLike, document, allow_nan: bool = True) -> None:
    """A local JSON file (json_bytes), whole or not at all (atomic_file); Location.write_json
    writes one on any store."""
    with atomic_file(path) as handle:
        handle.write(json_bytes(document, allow_nan))


def _staged_file(final: str) -> tuple[str, BinaryIO]:
    """`final`.partial, created exclusively and open for writing, or, where one exists
    (another writer's now, or a killed one's: never written into), a name of its own."""
    staged = final + STAGED_SUFFIX
    try:
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        staged = Location.attempt_name(final)
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    return staged, open(descriptor, "wb")


class StorageUriError(ValueError):
    """A URI part of which its filesystem would drop (it would name another folder), or one
    it cannot read."""


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem and path of `uri` (check_uri first); a StorageUriError, its
    credentials redacted, where pyarrow cannot read it (its own message repeats the URI)."""
    check_uri(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError) as error:
        hint = ("; write each space (or other white space) in it percent-encoded: %20"
                if re.search(r"\s", uri) else
                "; a password with '/', '#', '?' or '@' must be percent-encoded"
                if "@" in uri else "")
        raise StorageUriError(f"{redact(uri)}: not a URI pyarrow can open "
                              f"({redact_text(str(error).replace(uri, redact(uri)))}){hint}"
                              ) from None


def check_uri(uri: str) -> None:
    """A '#' begins a fragment, and a file:// URI takes no options after '?': pyarrow drops
    both (with the query of an s3:// URI after a '#'), so `file:///data/run#2` named
    /data/run, another dataset's folder."""
    if "#" in uri:
        raise StorageUriError(f"{redact(uri)}: '#' begins a URI fragment, which is dropped "
                              "(the URI would name another folder): write it as %23, or "
                              "choose a name without it")
    if uri.split("://", 1)[0].lower() == "file" and "?" in uri:
        raise StorageUriError(f"{redact(uri)}: a file:// URI takes no '?' options (the URI "
                              "would name another folder): write '?' as %3F, or give the "
                              "path itself")


# the bytes an object store's stream asks for at once: one GET of 4 MiB where tarfile reads
# 10 KiB (a 1 GB shard was 100,000 requests); 16 shards read at once (training's interleave)
# hold 64 MiB of them
STORE_READ_BUFFER = 4 << 20


def json_lines(data: bytes) -> list:
    """The records of JSON-lines bytes (a failures list), blank lines skipped."""
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


@dataclass(frozen=True)
class Location:
    """A filesystem and a root path on it."""

    fs: pafs.FileSystem
    root: str

    @classmethod
    def parse(cls, uri_or_path: str) -> "Location":
        """The filesystem and root of a local path or a URI (file://, s3://, gs://, ...); a
        StorageUriError where part of a URI would be dropped unseen, or where there is no
        path at all (an empty one would name the filesystem's root)."""
        if not str(uri_or_path).strip():
            raise StorageUriError(f"{uri_or_path!r} names no folder: give a dataset's path or "
                                  "URI")
        if "://" in uri_or_path:
            fs, root = filesystem_of(uri_or_path)
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

    def is_dir(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory

    def is_empty_dir(self, path: str) -> bool:
        """Whether `path` is a directory holding nothing."""
        if not self.is_dir(path):
            return False
        return not self.fs.get_file_info(pafs.FileSelector(path))

    def makedirs(self, path: str) -> None:
        self.fs.create_dir(path, recursive=True)

    def read_json_lines(self, path: str) -> list[dict]:
        """The records of a JSON-lines file (a failures list), blank lines skipped."""
        return json_lines(self.read_bytes(path))

    def read_json_or_empty(self, path: str) -> dict:
        """A JSON file's document, {} where there is no such file."""
        return json.loads(self.read_bytes(path)) if self.exists(path) else {}

    def write_json(self, path: str, document) -> None:
        """Write a run file's JSON (json_bytes) as write_bytes does."""
        self.write_bytes(path, json_bytes(document))

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file; locally through a staged name, synced and renamed, so a reader
        sees the old file or the new one, never a torn one."""
        staged = self.staging_name(path)
        try:
            with self.fs.open_output_stream(staged, compression=None) as stream:
                stream.write(data)
            self.publish(staged, path)
        except BaseException:
            if staged != path:  # (an object store's upload that failed replaced nothing)
                with contextlib.suppress(OSError):
                    self.delete(staged)
            raise

    @contextlib.contextmanager
    def staged_output(self, path: str) -> Iterator[pa.NativeFile]:
        """A stream to write `path` in parts, published (as write_bytes publishes) when the
        block ends; where the block raises, `path` is left as it was. Locally the parts go to
        a staged file (removed on failure); on object stores, whose uploads complete even when
        the writer fails, to memory, uploaded whole on success (for run files such as
        sources.parquet: megabytes, not shards)."""
        if not self.atomic_rename:
            buffer = pa.BufferOutputStream()
            yield buffer
            self.write_bytes(path, buffer.getvalue().to_pybytes())
            return
        staged = self.staging_name(path)
        try:
            with self.fs.open_output_stream(staged, compression=None) as stream:
                yield stream
            self.publish(staged, path)  # (refused where `path` is a folder)
        except BaseException:
            self.delete(staged)
            raise

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path, compression=None) as stream:
            return stream.read()

    def open_stream(self, path: str) -> pa.NativeFile:
        """A file's bytes to read in order (a shard tar streamed): on an object store through
        a buffer of STORE_READ_BUFFER bytes, so that tarfile's 10 KiB reads are one ranged GET
        per buffer, not one each; a local file unbuffered (the system caches it)."""
        buffer = 0 if self.fs.type_name == "local" else STORE_READ_BUFFER
        return self.fs.open_input_stream(path, compression=None, buffer_size=buffer)

    def publish(self, staged: str, final: str) -> None:
        """Move a staged file to its final name (no-op where staging used the final name).
        Locally the file's bytes reach the disk before the rename, and the rename before the
        call returns (its folder is synced too); on object stores the staged object is
        copied by the store (on S3, one larger than one copy request takes, 5 GiB, in parts),
        then removed."""
        if staged == final:
            return
        if not self.atomic_rename:
            if self.fs.type_name == "s3" and (self.fs.get_file_info(staged).size or 0) > \
                    S3_COPY_BYTES:
                _s3_copy_in_parts(self.fs, staged, final)
            else:
                self.fs.copy_file(staged, final)
            self.fs.delete_file(staged)
            return
        _fsync(staged)
        self.fs.move(staged, final)
        _fsync(os.path.dirname(final) or ".")

    def staging_name(self, final: str) -> str:
        """Where to write a small file before publication: an attempt's own name locally, the
        final one on object stores (written whole in one upload)."""
        return self.attempt_name(final) if self.atomic_rename else final

    @staticmethod
    def attempt_name(final: str) -> str:
        """A name unique to one attempt at writing `final`, on every store: two attempts at
        one shard never write the same file, and one that fails or is refused drops its own
        file only (on object stores an upload completes even when its writer gives up:
        written under the final name, it would replace a file another attempt published)."""
        return f"{final}.{uuid.uuid4().hex[:12]}{STAGED_SUFFIX}"

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Write `path` only where no file has that name yet; False where one does. Locally an
        exclusive creation (O_EXCL), on S3 a conditional put (If-None-Match: *): of two writers
        one wins, even in the same instant. Other stores (GCS through pyarrow) get a check,
        then a write: two writers in the same instant could both succeed."""
        if self.atomic_rename:
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return True
        if self.fs.type_name == "s3":
            return _s3_put_if_absent(self.fs, path, data)
        if self.exists(path):
            return False
        self.write_bytes(path, data)
        return True

    def delete(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_file(path)


def _s3_client(fs: pafs.S3FileSystem):
    """A boto3 client for the same endpoint, region and credentials as a pyarrow S3 filesystem
    (its pickled options; credentials it found in the environment, boto3 finds there too)."""
    import boto3

    options = fs.__reduce__()[1][0]
    endpoint = options["endpoint_override"]
    if endpoint and "://" not in endpoint:
        endpoint = f"{options['scheme']}://{endpoint}"
    return boto3.client("s3", region_name=options["region"] or None,
                        endpoint_url=endpoint or None,
                        aws_access_key_id=options["access_key"] or None,
                        aws_secret_access_key=options["secret_key"] or None,
                        aws_session_token=options["session_token"] or None)


def _s3_copy_in_parts(fs: pafs.S3FileSystem, source: str, target: str) -> None:
    """An S3 object copied by the store in parts of S3_PART_BYTES (boto3's managed copy: a
    multipart upload of copied ranges, completed only once every part is there); an OSError
    where S3 refuses it, as pyarrow's own calls raise."""
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    source_bucket, source_key = source.split("/", 1)
    bucket, key = target.split("/", 1)
    parts = TransferConfig(multipart_threshold=S3_PART_BYTES, multipart_chunksize=S3_PART_BYTES)
    try:
        _s3_client(fs).copy({"Bucket": source_bucket, "Key": source_key}, bucket, key,
                            Config=parts)
    except (BotoCoreError, ClientError) as error:
        raise OSError(f"copying {source} to {target} in parts: {error}") from error


def _s3_put_if_absent(fs: pafs.S3FileSystem, path: str, data: bytes) -> bool:
    """Write `path` unless it exists (S3's conditional put): False where it does; an OSError
    naming the object and S3's error code where the store refuses the put (denied, throttled,
    or conditional writes not supported), as pyarrow's own calls raise."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = path.split("/", 1)
    try:
        _s3_client(fs).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise OSError(f"writing {path} only if absent (a conditional put): S3 refused it "
                      f"({code}: {error})") from error
    except BotoCoreError as error:
        raise OSError(f"writing {path} only if absent (a conditional put): {error}") from error
    return True


class CountingStream:
    """A stream that counts the bytes read through it (pyarrow's input streams cannot tell)."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        block = self.stream.read(None if size is None or size < 0 else size)
        self.count += len(block)
        return block


class HashingStream(CountingStream):
    """A stream that hashes (and counts) every byte read through it."""

    def __init__(self, stream):
        super().__init__(stream)
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = super().read(size)
        self.digest.update(block)
        return block

    def hexdigest_to_end(self) -> str:
        """The SHA-256 of the whole stream (what a reader left unread is read now)."""
        while self.read(1 << 22):
            pass
        return self.digest.hexdigest()
