"""A shard's labelled samples wait for the seeded shuffle on local disk, not in memory: the
encoded images go to an anonymous temporary file, only their records and offsets stay."""

import tempfile


class SpillError(OSError):
    """A shard's samples could not wait on the worker node's local disk (its temporary
    folder full): the node's failure, not the output's."""


class SpilledSamples:
    """Append (record, image bytes or None: a version stored as its recipe only); read back
    any sample by its position."""

    def __init__(self):
        self._file = tempfile.TemporaryFile(prefix="iqa-shard-")  # noqa: SIM115 (closed in close)
        self._entries: list[tuple[dict, int, int | None]] = []
        self._end = 0

    def extend(self, samples) -> None:
        self._file.seek(self._end)
        for record, data in samples:
            if data is None:
                self._entries.append((record, self._end, None))
                continue
            try:
                self._file.write(data)
            except OSError as error:
                why = error.strerror or str(error)
                raise SpillError(error.errno, f"a shard's samples could not wait in "
                                 f"{tempfile.gettempdir()} on this node ({why})") from error
            self._entries.append((record, self._end, len(data)))
            self._end += len(data)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, position: int) -> tuple[dict, bytes | None]:
        record, offset, size = self._entries[position]
        if size is None:
            return record, None
        self._file.seek(offset)
        return record, self._file.read(size)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "SpilledSamples":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
