"""Files of `predict_files` records: JSON Lines, CSV and Parquet, written batch by batch.

`keras-lcnet predict --output` writes through `open_records`. JSON Lines and
CSV files are appended and flushed to disk (`fsync`) once per batch, so
whatever stops a run (Ctrl-C, a crash, a hard kill) leaves every finished
batch in the file; a line torn by a hard kill is cut off when the file is
resumed. Parquet has no append: its records go to `FILE.partial`, which
replaces `FILE` when the run ends, Ctrl-C and errors included (a hard kill
loses that run's new records, never the file's older ones).

CSV and Parquet have the columns `COLUMNS` (empty where a record has no such
field); CSV cells holding lists or the attribute dict are JSON text.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator

COLUMNS = ("path", "labels", "wnids", "scores", "attributes", "error")
FORMATS = (".jsonl", ".csv", ".parquet")
_JSON_CELLS = ("labels", "wnids", "scores", "attributes")


def check_format(path: str | os.PathLike) -> str:
    """The record format `path` names (its suffix); fails early if it cannot be written.

    Args:
        path: A `.jsonl`, `.csv` or `.parquet` file name.

    Returns:
        The suffix, e.g. `".jsonl"`.

    Raises:
        ValueError: Another suffix, or `.parquet` without pyarrow installed.
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"Cannot tell the record format of {os.fspath(path)!r}: name it "
                         "*.jsonl, *.csv or *.parquet.")
    if suffix == ".parquet":
        _pyarrow()
    return suffix


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ValueError('Writing .parquet needs pyarrow: pip install "keras-lcnet[parquet]", '
                         "or write .jsonl or .csv.") from None
    return pyarrow


class RecordFile:
    """An output file of records, open for writing; use `open_records` to make one.

    Attributes:
        path: The file.
        done: The paths the file held before (with `resume=True`).
        failed: How many of those records are errors.
    """

    def __init__(self, path: str) -> None:
        self.path, self.done, self.failed = path, set(), 0

    def _remember(self, record: dict) -> None:
        self.done.add(record["path"])
        self.failed += bool(record.get("error"))

    def write(self, records: list[dict]) -> None:
        """Appends `records` (a batch) and flushes them to disk."""
        raise NotImplementedError

    def close(self) -> None:
        """Finishes the file; it is valid (and complete up to the last batch) afterwards."""
        raise NotImplementedError

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _complete_lines(path: str) -> Iterator[str]:
    """The lines of `path`; a last line without its newline (a hard kill's) is cut off."""
    with open(path, "rb+") as file:
        end = 0
        for line in file:
            if not line.endswith(b"\n"):
                break
            end += len(line)
            yield line.decode("utf-8")
        file.truncate(end)


def _not_ours(path: str, where: str) -> ValueError:
    return ValueError(f"Cannot resume {path!r}: {where} is not a keras-lcnet predict record; "
                      "write to another file, or remove it.")


class _LineFile(RecordFile):
    """JSON Lines or CSV: appended, flushed and fsynced once per batch."""

    def __init__(self, path: str, resume: bool) -> None:
        super().__init__(path)
        if resume and os.path.exists(path):
            for record in self._read():
                self._remember(record)
        self._file = open(path, "a" if resume else "w", encoding="utf-8", newline="")  # noqa: SIM115
        if self._file.tell() == 0:
            self._commit(self._header())

    def _read(self) -> Iterator[dict]:
        raise NotImplementedError

    def _header(self) -> str:
        return ""

    def _text(self, records: list[dict]) -> str:
        raise NotImplementedError

    def _commit(self, text: str) -> None:
        if text:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    def write(self, records: list[dict]) -> None:
        self._commit(self._text(records))

    def close(self) -> None:
        self._file.close()


class _JsonLines(_LineFile):
    def _read(self) -> Iterator[dict]:
        for number, line in enumerate(_complete_lines(self.path), 1):
            try:
                record = json.loads(line)
                if isinstance(record, dict) and isinstance(record.get("path"), str):
                    yield record
                    continue
            except ValueError:
                pass
            raise _not_ours(self.path, f"line {number}")

    def _text(self, records: list[dict]) -> str:
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


class _Csv(_LineFile):
    def _read(self) -> Iterator[dict]:
        rows = csv.reader(_complete_lines(self.path))
        header = next(rows, None)
        if header is not None and tuple(header) != COLUMNS:
            raise _not_ours(self.path, "its header")
        for number, row in enumerate(rows, 2):
            if len(row) != len(COLUMNS):
                raise _not_ours(self.path, f"line {number}")
            yield dict(zip(COLUMNS, row, strict=True))

    def _header(self) -> str:
        return ",".join(COLUMNS) + "\n"

    def _text(self, records: list[dict]) -> str:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        for record in records:
            writer.writerow(
                "" if record.get(c) is None
                else json.dumps(record[c], ensure_ascii=False) if c in _JSON_CELLS
                else record[c]
                for c in COLUMNS
            )
        return text.getvalue()


def _parquet_schema(pa):
    return pa.schema([
        ("path", pa.string()), ("labels", pa.list_(pa.string())),
        ("wnids", pa.list_(pa.string())), ("scores", pa.list_(pa.float64())),
        ("attributes", pa.string()), ("error", pa.string()),
    ])


class _Parquet(RecordFile):
    """Parquet: one row group per batch in `FILE.partial`, which replaces `FILE` on close.

    Resuming copies the file's row groups into the new one first.
    """

    def __init__(self, path: str, resume: bool) -> None:
        super().__init__(path)
        self._pa = _pyarrow()
        self._schema = _parquet_schema(self._pa)
        self._partial = path + ".partial"
        self._writer = self._pa.parquet.ParquetWriter(self._partial, self._schema)
        try:
            if resume and os.path.exists(path):
                self._copy_old()
        except BaseException:
            self._writer.close()
            os.remove(self._partial)
            raise

    def _copy_old(self) -> None:
        try:
            old = self._pa.parquet.ParquetFile(self.path)
        except (self._pa.ArrowException, OSError) as e:
            raise ValueError(f"Cannot resume {self.path!r}: it is not a readable Parquet file "
                             f"({' '.join(str(e).split())}); write to another file.") from None
        if not old.schema_arrow.equals(self._schema):
            raise _not_ours(self.path, "its schema")
        for group in range(old.num_row_groups):
            table = old.read_row_group(group)
            self._writer.write_table(table)
            for path, error in zip(table["path"].to_pylist(), table["error"].to_pylist(),
                                   strict=True):
                self._remember({"path": path, "error": error})

    def write(self, records: list[dict]) -> None:
        rows = [{c: record.get(c) for c in COLUMNS} for record in records]
        for row in rows:
            if row["attributes"] is not None:
                row["attributes"] = json.dumps(row["attributes"], ensure_ascii=False)
        self._writer.write_table(self._pa.Table.from_pylist(rows, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
        os.replace(self._partial, self.path)


def open_records(path: str | os.PathLike, resume: bool = False) -> RecordFile:
    """Opens a record file for writing, by its suffix: `.jsonl`, `.csv` or `.parquet`.

    Args:
        path: The file. Without `resume`, an existing file is replaced.
        resume: Keep the file's records and add to them; their paths are
            in `done` (pass it as `predict_files(..., skip=)`).

    Returns:
        A `RecordFile`; write each batch with `write(records)`, then `close()`
        it (or use it in a `with` statement).

    Raises:
        ValueError: An unknown suffix, `.parquet` without pyarrow, or with
            `resume`, a file that does not hold predict records.
    """
    path = os.fspath(path)
    kind = {".jsonl": _JsonLines, ".csv": _Csv, ".parquet": _Parquet}[check_format(path)]
    return kind(path, resume)


def write_records(records: Iterable[dict], file: RecordFile, batch_size: int) -> Iterator[dict]:
    """Writes `records` to `file` in groups of `batch_size`; yields each once it is on disk.

    Args:
        records: Records, e.g. from `predict_files` (which yields them batch by batch).
        file: An open `RecordFile`.
        batch_size: Records per write (and per fsync, or Parquet row group).

    Yields:
        The records, after the write that holds them.
    """
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) == batch_size:
            file.write(batch)
            yield from batch
            batch = []
    if batch:
        file.write(batch)
        yield from batch
