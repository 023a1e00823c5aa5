"""Readers for tabular input files: CSV, JSON Lines and Parquet.

Each reader checks the file up front (readable, of the stated format, has the mapped columns) and
raises :class:`~recsys.errors.InputFormatError` before anything is written. It then yields chunks of
rows as ``(position, row)`` pairs, where ``position`` is the 1-based line number in the file (CSV,
JSON Lines; a CSV record spanning several lines gets the line it starts on) or the 1-based row number
(Parquet), and ``row`` maps column names to raw values (strings for CSV, JSON values for JSON Lines,
Python scalars for Parquet). A JSON Lines line that is not a JSON object comes through as a
:class:`BadLine` so the caller can reject it with its line number.
"""

from __future__ import annotations

import abc
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.errors import InputFormatError

FORMATS = ("csv", "jsonl", "parquet")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
ARROW_BLOCK_BYTES = 1 << 24


@dataclass(frozen=True)
class BadLine:
    """A line that could not be parsed into a row (JSON Lines only)."""

    reason: str
    raw: str


@dataclass
class FrameChunk:
    positions: list[int]
    frame: Any  # pandas.DataFrame, one row per position
    bad: list[tuple[int, BadLine]]


Row = dict[str, Any]
Chunk = list[tuple[int, "Row | BadLine"]]


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputFormatError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InputFormatError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"use one of {sorted(_SUFFIXES)} or pass --format {{{','.join(FORMATS)}}}"
        )
    return found


class TableReader(abc.ABC):
    """Reads one input file in chunks. Construct with :func:`open_table`."""

    def __init__(self, path: Path, fmt: str, columns: list[str], position_name: str) -> None:
        self.path = path
        self.format = fmt
        self.columns = columns
        self.position_name = position_name  # "line", or "row_number" for Parquet

    def require(self, mapped: dict[str, str | Sequence[str] | None]) -> None:
        """Check that every mapped column exists; the error names the option, the column and lists the columns found."""
        present = set(self.columns)
        for option, cols in mapped.items():
            if cols is None:
                continue
            for col in [cols] if isinstance(cols, str) else cols:
                if col not in present:
                    raise InputFormatError(
                        f"{self.path}: column {col!r} (mapped as {option}) is not in the file; "
                        f"columns found: {', '.join(self.columns) or '(none)'}"
                    )

    @abc.abstractmethod
    def chunks(self, size: int) -> Iterator[Chunk]:
        """Row chunks of at most ``size`` ``(position, row)`` pairs."""

    def extra_columns(self, mapped: dict[str, Any], keep: Sequence[str] | None) -> list[str]:
        """Columns kept as JSON attributes: ``keep`` when given, else every column no option maps."""
        if keep is not None:
            return list(keep)
        used = {c for v in mapped.values() if v for c in ([v] if isinstance(v, str) else v)}
        return [c for c in self.columns if c not in used]

    def frames(self, size: int) -> Iterator[FrameChunk]:
        """Columnar chunks: the good rows as a DataFrame, the unparseable lines beside it."""
        import pandas as pd

        for chunk in self.chunks(size):
            positions = [p for p, r in chunk if not isinstance(r, BadLine)]
            rows = [r for _, r in chunk if not isinstance(r, BadLine)]
            bad = [(p, r) for p, r in chunk if isinstance(r, BadLine)]
            frame = pd.DataFrame.from_records(rows, columns=self.columns) if rows else pd.DataFrame(columns=self.columns)
            yield FrameChunk(positions, frame, bad)


class _CsvReader(TableReader):
    def __init__(self, path: Path) -> None:
        self._delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                header = next(csv.reader(fh, delimiter=self._delimiter), None)
        except UnicodeDecodeError as exc:
            raise InputFormatError(f"{path}: not a UTF-8 text file, so not CSV ({exc.reason} at byte {exc.start})") from exc
        except csv.Error as exc:
            raise InputFormatError(f"{path}: not readable as CSV: {exc}") from exc
        if not header or all(not h.strip() for h in header):
            raise InputFormatError(f"{path}: empty file or no header line; a CSV file needs a header row of column names")
        super().__init__(path, "csv", [h.strip() for h in header], "line")

    def chunks(self, size: int) -> Iterator[Chunk]:
        cols = self.columns
        n = len(cols)
        with self.path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=self._delimiter)
            next(reader)
            chunk: Chunk = []
            start = reader.line_num + 1
            try:
                for rec in reader:
                    if rec:
                        if len(rec) == n:
                            chunk.append((start, dict(zip(cols, rec))))
                        else:
                            chunk.append((start, BadLine(f"has {len(rec)} fields, the header has {n}", self._delimiter.join(rec))))
                    start = reader.line_num + 1
                    if len(chunk) >= size:
                        yield chunk
                        chunk = []
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputFormatError(f"{self.path}: line {start}: not readable as CSV: {exc}") from exc
            if chunk:
                yield chunk


    def _is_simple(self) -> bool:
        """True when every record is one non-empty line (no quotes, so no multi-line fields; no blank lines).

        Then a record's line number is its index + 2, and the fast Arrow parser can be used.
        """
        import mmap

        with self.path.open("rb") as fh:
            if self.path.stat().st_size == 0:
                return False
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return mm.find(b'"') < 0 and mm.find(b"\n\n") < 0 and mm.find(b"\n\r\n") < 0

    def frames(self, size: int) -> Iterator[FrameChunk]:
        done = 0
        if self._is_simple():
            import pyarrow as pa

            try:
                for chunk in self._arrow_frames(size):
                    done += len(chunk.positions)
                    yield chunk
                return
            except (pa.ArrowInvalid, UnicodeDecodeError):
                pass  # e.g. a record with the wrong number of fields: the csv module reports it per row
        yield from self._python_frames(size, skip=done)

    def _arrow_frames(self, size: int) -> Iterator[FrameChunk]:
        """Arrow's multi-threaded CSV parser, all columns as strings; only for simple files (see above)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        reader = pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=ARROW_BLOCK_BYTES, column_names=self.columns, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=self._delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in self.columns}, strings_can_be_null=False
            ),
        )
        row = 0
        pending: list[Any] = []
        buffered = 0
        exhausted = False
        while not exhausted:
            try:
                batch = reader.read_next_batch()
                pending.append(batch)
                buffered += batch.num_rows
            except StopIteration:
                exhausted = True
            while buffered >= size or (exhausted and buffered > 0):
                table = pa.Table.from_batches(pending)
                take = min(size, buffered)
                frame = table.slice(0, take).to_pandas(types_mapper=_arrow_strings)
                rest = table.slice(take)
                pending = rest.to_batches() if rest.num_rows else []
                buffered -= take
                yield FrameChunk(list(range(row + 2, row + 2 + take)), frame, [])
                row += take

    def _python_frames(self, size: int, skip: int = 0) -> Iterator[FrameChunk]:
        import pandas as pd

        cols = self.columns
        n = len(cols)
        with self.path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=self._delimiter)
            next(reader)
            for _ in range(skip):
                next(reader)
            positions: list[int] = []
            records: list[list[str]] = []
            bad: list[tuple[int, BadLine]] = []
            start = reader.line_num + 1
            try:
                for rec in reader:
                    if rec:
                        if len(rec) == n:
                            positions.append(start)
                            records.append(rec)
                        else:
                            bad.append((start, BadLine(f"has {len(rec)} fields, the header has {n}", self._delimiter.join(rec))))
                    start = reader.line_num + 1
                    if len(records) + len(bad) >= size:
                        yield FrameChunk(positions, pd.DataFrame(records, columns=cols, dtype=object), bad)
                        positions, records, bad = [], [], []
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputFormatError(f"{self.path}: line {start}: not readable as CSV: {exc}") from exc
            if records or bad:
                yield FrameChunk(positions, pd.DataFrame(records, columns=cols, dtype=object), bad)


def _arrow_strings(dtype: Any) -> Any:
    """Keep Arrow strings Arrow-backed in pandas, so string operations run in C."""
    import pandas as pd
    import pyarrow as pa

    return pd.StringDtype("pyarrow") if dtype == pa.string() else None


class _JsonlReader(TableReader):
    def __init__(self, path: Path) -> None:
        columns: dict[str, None] = {}
        try:
            with path.open(encoding="utf-8") as fh:
                first = None
                for line in fh:
                    if line.strip():
                        first = line
                        break
        except UnicodeDecodeError as exc:
            raise InputFormatError(f"{path}: not a UTF-8 text file, so not JSON Lines") from exc
        if first is None:
            raise InputFormatError(f"{path}: empty file; JSON Lines needs one JSON object per line")
        try:
            obj = json.loads(first)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}: the first line is not JSON ({exc.msg}); JSON Lines needs one JSON object per line") from exc
        if not isinstance(obj, dict):
            raise InputFormatError(f"{path}: the first line is a JSON {type(obj).__name__}, not an object; JSON Lines needs one object per line")
        columns.update(dict.fromkeys(obj))
        super().__init__(path, "jsonl", list(columns), "line")

    def chunks(self, size: int) -> Iterator[Chunk]:
        chunk: Chunk = []
        with self.path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    chunk.append((lineno, BadLine(f"not valid JSON: {exc.msg}", line.rstrip("\n"))))
                else:
                    if isinstance(obj, dict):
                        chunk.append((lineno, obj))
                    else:
                        chunk.append((lineno, BadLine(f"a JSON {type(obj).__name__}, not an object", line.rstrip("\n"))))
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


class _ParquetReader(TableReader):
    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFormatError(f"{path}: not a Parquet file: {exc}") from exc
        super().__init__(path, "parquet", list(self._file.schema_arrow.names), "row_number")

    def chunks(self, size: int) -> Iterator[Chunk]:
        pos = 1
        for batch in self._file.iter_batches(batch_size=size):
            cols = batch.to_pydict()
            names = list(cols)
            n = batch.num_rows
            chunk: Chunk = [(pos + i, {c: cols[c][i] for c in names}) for i in range(n)]
            pos += n
            yield chunk


def open_table(path: str | Path, fmt: str | None = None) -> TableReader:
    """Open ``path`` for chunked reading; checks readability and format first.

    Raises:
        InputFormatError: missing or unreadable file, unknown or wrong format.
    """
    p = Path(path)
    if not p.exists():
        raise InputFormatError(f"{p}: no such file")
    if not p.is_file():
        raise InputFormatError(f"{p}: not a regular file")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise InputFormatError(f"{p}: cannot be read: {exc.strerror}") from exc
    kind = detect_format(p, fmt)
    if kind == "csv":
        return _CsvReader(p)
    if kind == "jsonl":
        return _JsonlReader(p)
    return _ParquetReader(p)
