"""Listing sources (a local folder, a list file, an object-store prefix, or the embedded photos)
in a stable order, and loading one as 8-bit RGB."""

import contextlib
import csv
import errno
import functools
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow.fs as pafs

from pipeline.embedded import EMBEDDED_PHOTOS, embedded_photo
from shards.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, Decoded, DecodeError, decode
from shards.storage import filesystem_of, redact

EMBEDDED = "embedded"
EMBEDDED_PREFIX = "embedded:"
LIST_EXTENSIONS = {".txt", ".csv", ".lst"}
UNREADABLE = "unreadable"  # the failure reason of a source whose bytes could not be read
READ_RETRY_SECONDS = (1.0, 4.0)  # waits before the 2nd and 3rd read of a source whose read failed
PASSING_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ESTALE,
                            errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED})


@dataclass(frozen=True)
class Source:
    uri: str        # what to read (or, in an object-store listing, to show): a path, a URI,
                    # or embedded:NAME
    order_key: str  # relative path or URI: the stable sort order
    stem: str       # file name without extension, for the ref_id
    key: str = ""   # in an object-store listing: the object's path as listed, read through the
                    # listing's filesystem (a key with a space, ? # or % is never re-parsed)
    size: int | None = None  # bytes, where the listing tells it cheaply (regular files only)
    mtime_ns: int | None = None  # its modification time, where the listing tells it


@dataclass(frozen=True)
class Listing:
    sources: list[Source]  # sorted by order_key
    skipped: Counter       # names listed that are not image names, by extension ("" for none)
    unlisted: dict[str, str] = field(default_factory=dict)  # folders that could not be read


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _taken(name: str, skipped: Counter) -> bool:
    """Whether `name` is an image name; counted in `skipped`, by extension, if not."""
    if _is_image_name(name):
        return True
    skipped[PurePosixPath(name).suffix.lower()] += 1
    return False


def _from_local_folder(folder: Path, skipped: Counter, unlisted: dict[str, str]
                       ) -> list[Source]:
    """Every image-named entry below `folder`, dangling links included (they fail later,
    recorded, rather than vanish from the listing); the folders that cannot be read go to
    `unlisted`, with why. The folder's own tree first, then the linked folders in the order
    they are met (by name, each folder's entries sorted): a folder is walked once, under its
    own path where the tree holds it, else under the first link to it, and a link back up
    the tree (a loop) is not walked again. Neither depends on the order the file system
    lists a folder in (the plan is a function of the sources)."""
    found, seen, walks = [], set(), [folder]

    def unreadable(error: OSError) -> None:
        unlisted[printable(str(error.filename))] = error.strerror or str(error)

    def walked(path: Path) -> bool:
        identity = _folder_identity(path)
        return identity is not None and identity in seen

    while walks:
        start = walks.pop(0)
        if walked(start):
            continue
        for directory, subfolders, files in os.walk(start, onerror=unreadable):
            seen.add(_folder_identity(Path(directory)))
            links = sorted(name for name in subfolders if os.path.islink(Path(directory) / name))
            walks.extend(Path(directory) / name for name in links)
            subfolders[:] = sorted(name for name in subfolders
                                   if name not in links and not walked(Path(directory) / name))
            for name in files:
                if _taken(name, skipped):
                    path = Path(directory) / name
                    found.append(Source(str(path), path.relative_to(folder).as_posix(),
                                        path.stem, **_regular_stat(path)))
    return found


def _regular_stat(path: Path) -> dict:
    """The size and mtime_ns of a regular file (links followed); None for anything else."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the name (a list of find -print0)
        return {}
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns} \
        if stat.S_ISREG(status.st_mode) else {}


def _folder_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


@functools.lru_cache(maxsize=8)
def _from_uri(spec: str) -> tuple[pafs.FileSystem, str]:
    return filesystem_of(spec)  # (a prefix whose '#' pyarrow would drop: refused)


def store_filesystem(spec: str) -> pafs.FileSystem:
    """The filesystem of an object-store listing URI (with its endpoint and options), made once
    per process."""
    return _from_uri(spec)[0]


def _literal(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a URI named on its own (a list file's line, a command's
    argument), its path taken as written after the scheme and authority: a '#', '?' or '%' is
    part of a file name, as in a folder's or a bucket's listing, never a fragment, a query or
    an escape."""
    scheme, rest = uri.split("://", 1)
    authority, _, path = rest.partition("/")
    if scheme == "file":
        return pafs.LocalFileSystem(), "/" + path
    filesystem, root = _from_uri(f"{scheme}://{authority}")
    return filesystem, f"{root.rstrip('/')}/{path}"


def _from_object_store(uri: str, skipped: Counter) -> list[Source]:
    filesystem, root = _from_uri(uri)
    scheme = uri.split("://", 1)[0]
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    return [Source(f"{scheme}://{info.path}", info.path.removeprefix(root).lstrip("/"),
                   PurePosixPath(info.path).stem, key=info.path, size=info.size,
                   mtime_ns=info.mtime_ns)
            for info in infos
            if info.type == pafs.FileType.File and _taken(info.path, skipped)]


def _list_entries(path: Path) -> list[str]:
    """A .txt or .lst list's lines, whole (a comma is part of a name there), a .csv's first
    column, without a header row (one that names no image): each name as written, spaces
    that begin it included (a file may be named so), without those that end it (as no image
    name ends in a space: its extension is none); blank lines are passed over."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a BOM, as Excel writes
            if path.suffix.lower() != ".csv":
                return [name for line in handle if (name := line.rstrip())]
            rows = [row[0].rstrip() for row in csv.reader(handle) if row and row[0].strip()]
    except UnicodeDecodeError as error:
        raise ValueError(f"sources {str(path)!r}: not UTF-8 text ({error}); save the list as "
                         "UTF-8") from None
    return rows[1:] if rows and not _is_image_name(rows[0]) else rows


def _from_list_file(path: Path, skipped: Counter) -> list[Source]:
    """One path or URI per line (first column of a CSV such as kadis700k_ref_imgs.csv).
    Relative paths are relative to the list file."""
    named = [(entry, entry if "://" in entry or Path(entry).is_absolute()
              else str(path.parent / entry))
             for entry in _list_entries(path) if _taken(entry, skipped)]
    stats = _uri_stats([uri for _, uri in named if "://" in uri])
    return [Source(uri, entry, PurePosixPath(entry).stem,
                   **(stats.get(uri, {}) if "://" in uri else _regular_stat(Path(uri))))
            for entry, uri in named]


def _uri_stats(uris: list[str]) -> dict[str, dict]:
    """The size and mtime_ns of each URI of a list file that names a file, so that a resume
    sees it changed: a file:// one by a stat, the others from one listing of each folder they
    lie in (an object store answers a request per thousand files, not one per file). A URI
    that is not found, is malformed, or lies in a folder that cannot be listed has none (its
    reading names the problem later)."""
    stats, folders = {}, {}
    for uri in uris:
        try:
            filesystem, file_path = _literal(uri)
        except (OSError, ValueError):
            continue
        if isinstance(filesystem, pafs.LocalFileSystem):
            stats[uri] = _regular_stat(Path(file_path))
        else:
            folder = (id(filesystem), file_path.rpartition("/")[0])
            folders.setdefault(folder, (filesystem, []))[1].append((uri, file_path))
    for (_, folder), (filesystem, members) in folders.items():
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError:
            continue
        listed = {info.path: info for info in infos if info.type == pafs.FileType.File}
        for uri, file_path in members:
            if file_path in listed:
                stats[uri] = {"size": listed[file_path].size,
                              "mtime_ns": listed[file_path].mtime_ns}
    return stats


def skipped_note(skipped: Counter) -> str:
    """The listed names that are not image names, in words (most frequent extension first)."""
    counts = ", ".join(f"{suffix or 'no extension'} {count}"
                       for suffix, count in skipped.most_common())
    return (f"names that are not image names were skipped: {skipped.total()} ({counts}); "
            f"sources end in {', '.join(sorted(IMAGE_EXTENSIONS))} (any case)")


def list_sources(spec: str) -> list[Source]:
    """The sources `spec` names, sorted by their relative path or URI; none is an error."""
    return listing(spec).sources


def listing(spec: str) -> Listing:
    """The sources `spec` names, sorted by their relative path or URI (none is an error), and
    the names it lists that are not image names."""
    skipped: Counter = Counter()
    unlisted: dict[str, str] = {}
    if spec == EMBEDDED:
        found = [Source(EMBEDDED_PREFIX + name, name, name) for name in EMBEDDED_PHOTOS]
    elif "://" in spec:
        found = _from_object_store(spec, skipped)
    elif Path(spec).is_dir():
        found = _from_local_folder(Path(spec), skipped, unlisted)
    elif Path(spec).is_file() and Path(spec).suffix.lower() in LIST_EXTENSIONS:
        found = _from_list_file(Path(spec), skipped)
    else:
        what = ("no such folder or file (nothing there, or a link to nothing)"
                if not Path(spec).exists() else "neither a folder nor a list file")
        raise ValueError(f"sources {redact(spec)!r}: {what}; sources are 'embedded', a folder, "
                         f"a list file ({', '.join(sorted(LIST_EXTENSIONS))}) or an "
                         "object-store URI")
    if not found:
        unread = f"; folders that cannot be read: {unlisted_note(unlisted)}" if unlisted else ""
        raise ValueError(f"sources {redact(spec)!r} name no image (files ending in "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}, any case){unread}")
    return Listing(sorted(found, key=lambda source: source.order_key), skipped, unlisted)


def unlisted_note(unlisted: dict[str, str]) -> str:
    """The folders a listing could not read, in words (the first few)."""
    shown = "; ".join(f"{folder} ({why})" for folder, why in list(unlisted.items())[:3])
    more = f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else ""
    return f"{len(unlisted)}: {shown}{more}"


def byte_limit(max_pixels: int) -> int:
    """The most bytes a source within `max_pixels` is read for: the pixels uncompressed at 16
    bits in RGBA (8 bytes each) and 64 MiB of metadata. A larger file is refused unread."""
    return 8 * max_pixels + (64 << 20)


@contextlib.contextmanager
def open_source(uri: str, key: str = "", store: str = "") -> Iterator:
    """A binary stream of the bytes behind a path or URI (its path taken as written: _literal),
    or behind `key` in the filesystem of the listing URI `store`; a source that cannot be read
    raises DecodeError('unreadable'), also where a read of the stream fails."""
    try:
        with _opened(uri, key, store) as stream:
            yield stream
    except FileNotFoundError:
        detail = "dangling link" if os.path.islink(uri) else "no such file"
        raise DecodeError(UNREADABLE, f"{uri}: {detail}") from None
    except OSError as error:  # the cause kept: read_bytes tries a passing failure again
        raise DecodeError(UNREADABLE, f"{uri}: {error}") from error


def _opened(uri: str, key: str, store: str):
    """A readable file that knows its size (pyarrow's random-access files, a local file)."""
    if key:
        return store_filesystem(store).open_input_file(key)
    if "://" in uri:
        filesystem, path = _literal(uri)
        if isinstance(filesystem, pafs.LocalFileSystem):  # file://: a local path, as below
            return _opened_local(Path(path), uri)
        return filesystem.open_input_file(path)
    return _opened_local(Path(uri), uri)


def _opened_local(path: Path, uri: str):
    if path.exists() and not path.is_file():  # a FIFO would block, /dev/zero never end
        raise DecodeError("not_a_file", f"{uri}: not a regular file")
    return path.open("rb")


def read_bytes(uri: str, key: str, store: str, limit: int) -> bytes:
    """The bytes behind a source (open_source); DecodeError('too_large') for a source of more
    than `limit` bytes, refused by its size before any byte is read. A read that fails for a
    reason that may pass (_may_pass) is tried again after each of READ_RETRY_SECONDS; any
    other failure is final at once."""
    for wait in READ_RETRY_SECONDS:
        try:
            return _read_once(uri, key, store, limit)
        except DecodeError as error:
            if not _may_pass(error):
                raise
        time.sleep(wait)
    return _read_once(uri, key, store, limit)


def _may_pass(error: DecodeError) -> bool:
    """Whether a failed read may succeed if tried again: a timeout, a lost connection, or an
    OSError whose errno says it may pass (EIO, a stale NFS handle, ...). An object store's
    error (no errno) is not: pyarrow's client has tried it again already."""
    cause = error.__cause__
    return isinstance(cause, TimeoutError | ConnectionError) or (
        isinstance(cause, OSError) and cause.errno in PASSING_ERRNOS)


def _read_once(uri: str, key: str, store: str, limit: int) -> bytes:
    with open_source(uri, key, store) as stream:
        size = stream.size() if callable(getattr(stream, "size", None)) \
            else os.fstat(stream.fileno()).st_size
        if size > limit:
            raise DecodeError("too_large", f"{uri}: {size} bytes, more than an image within the "
                                           f"pixel limit (--max-pixels) takes ({limit})")
        return stream.read()


def printable(uri: str) -> str:
    """A URI as it can be written to JSON and parquet: bytes of a file name that are not UTF-8
    (kept by the OS listing as surrogates) become backslash escapes; reading uses the raw one."""
    return uri.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def single(text: str) -> Source:
    """One source named on a command line: a path, a URI or embedded:NAME."""
    stem = PurePosixPath(text.removeprefix(EMBEDDED_PREFIX)).stem
    return Source(text, text, stem)


def read_rgb(text: str) -> np.ndarray:
    """The uint8 RGB pixels of one path, URI or embedded:NAME (a DecodeError naming it when
    unreadable)."""
    try:
        return load(single(text)).pixels
    except DecodeError as error:
        detail, name = str(error).removeprefix(f"{error.reason}: "), printable(text)
        if name in detail:  # read_bytes names it already
            raise
        raise DecodeError(error.reason, f"{name}: {detail}") from None


def load(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS, store: str = "") -> Decoded:
    """A source as 8-bit RGB with its conversions, or DecodeError with the reason; `store` is
    the listing URI its key belongs to (the run's SOURCES)."""
    if source.uri.startswith(EMBEDDED_PREFIX):
        pixels = embedded_photo(source.uri.removeprefix(EMBEDDED_PREFIX))
        return Decoded(pixels, (pixels.shape[1], pixels.shape[0]), ())
    return decode(read_bytes(source.uri, source.key, store, byte_limit(max_pixels)), max_pixels)
