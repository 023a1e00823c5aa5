"""Where export rows go: Parquet, CSV or JSON Lines files, or a SQL table.

Every sink is written in numbered chunks that are each made durable on their own (a part file renamed
into place, or a committed batch in a staging table), so an interrupted export resumes at the first
missing chunk; :meth:`Sink.finish` then assembles the result under a temporary name and renames it (or
swaps the table in one transaction), so a failed run never leaves a half-written result.
"""

from __future__ import annotations

import abc
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from recsys.errors import ConfigError

__all__ = ["FORMATS", "FileSink", "Sink", "SqlTableSink", "open_sink"]

FORMATS = ("parquet", "csv", "jsonl")


class Sink(abc.ABC):
    """Chunked, resumable, all-or-nothing destination of export rows."""

    @abc.abstractmethod
    def done_chunks(self) -> set[int]:
        """Chunks already written by an earlier (interrupted) run with the same spec."""

    @abc.abstractmethod
    def write_chunk(self, chunk: int, table: pa.Table) -> None:
        """Make one chunk durable."""

    @abc.abstractmethod
    def finish(self, n_chunks: int) -> str:
        """Assemble chunks ``0 .. n_chunks - 1`` into the result; returns where it is."""

    @abc.abstractmethod
    def describe(self) -> str: ...


def _spec_check(saved: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    if saved != spec:
        changed = sorted(k for k in set(saved) | set(spec) if saved.get(k) != spec.get(k))
        raise ConfigError(
            f"{where} holds an interrupted export with other settings ({', '.join(changed)} differ); "
            "rerun with the same options to resume, or pass --restart to discard it"
        )


class FileSink(Sink):
    """One file (``parquet``, ``csv`` or ``jsonl``); chunks live in ``<file>.parts/`` until the end."""

    def __init__(self, path: str | Path, fmt: str, spec: dict[str, Any], *, restart: bool = False) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"export format must be one of {list(FORMATS)}, got {fmt!r}")
        self.path = Path(path)
        self.fmt = fmt
        self.parts = self.path.with_name(self.path.name + ".parts")
        if restart and self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        spec_file = self.parts / "spec.json"
        if spec_file.is_file():
            _spec_check(json.loads(spec_file.read_text()), spec, str(self.parts))
        else:
            spec_file.write_text(json.dumps(spec, sort_keys=True))

    def describe(self) -> str:
        return f"{self.fmt} file {self.path}"

    def _part(self, chunk: int) -> Path:
        return self.parts / f"part-{chunk:06d}.{self.fmt}"

    def done_chunks(self) -> set[int]:
        out = set()
        for p in self.parts.glob(f"part-*.{self.fmt}"):
            out.add(int(p.name.split("-")[1].split(".")[0]))
        return out

    def write_chunk(self, chunk: int, table: pa.Table) -> None:
        target = self._part(chunk)
        tmp = target.with_name(target.name + ".tmp")
        _write_table(table, tmp, self.fmt)
        os.replace(tmp, target)

    def finish(self, n_chunks: int) -> str:
        missing = [c for c in range(n_chunks) if not self._part(c).is_file()]
        if missing:
            raise RuntimeError(f"export chunks {missing[:5]} are missing from {self.parts}")
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                writer = None
                for c in range(n_chunks):
                    table = pq.read_table(self._part(c))
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                    writer.write_table(table)
                if writer is None:
                    raise RuntimeError("nothing to export")
                writer.close()
            else:
                with open(tmp, "wb") as out:
                    for c in range(n_chunks):
                        with open(self._part(c), "rb") as part:
                            data = part.read()
                        if self.fmt == "csv" and c > 0:
                            data = data.split(b"\n", 1)[1] if b"\n" in data else b""  # one header only
                        out.write(data)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        shutil.rmtree(self.parts)
        return str(self.path)


def _write_table(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path, compression="zstd")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            for row in table.to_pylist():
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


class SqlTableSink(Sink):
    """A SQL table; chunks go to ``<table>__staging`` (one transaction each), then replace the table at once."""

    def __init__(self, engine: Any, table: str, spec: dict[str, Any], schema: pa.Schema, *, restart: bool = False) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,50}", table):
            raise ConfigError(f"export table name must be letters, digits and '_' (at most 51), got {table!r}")
        from sqlalchemy import JSON, Column, Float, Integer, MetaData, String, Table

        self.engine = engine
        self.name = table
        meta = MetaData()
        cols = []
        for f in schema:
            kind = Integer if pa.types.is_integer(f.type) else Float if pa.types.is_floating(f.type) else String(256)
            cols.append(Column(f.name, kind))
        self.staging = Table(f"{table}__staging", meta, Column("chunk", Integer, index=True), *cols)
        self.spec_table = Table(f"{table}__spec", meta, Column("spec", JSON))
        self.target = Table(table, MetaData(), *[Column(c.name, c.type) for c in cols])
        if restart:
            self.staging.drop(engine, checkfirst=True)
            self.spec_table.drop(engine, checkfirst=True)
        meta.create_all(engine)
        from sqlalchemy import select

        with engine.begin() as conn:
            saved = conn.execute(select(self.spec_table.c.spec)).scalar_one_or_none()
            if saved is None:
                conn.execute(self.spec_table.insert().values(spec=spec))
            else:
                _spec_check(saved, spec, f"table {self.staging.name}")
        self.columns = [c.name for c in cols]

    def describe(self) -> str:
        return f"SQL table {self.name}"

    def done_chunks(self) -> set[int]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return {int(c) for c in conn.execute(select(self.staging.c.chunk).distinct()).scalars()}

    def write_chunk(self, chunk: int, table: pa.Table) -> None:
        data = table.to_pydict()
        rows = [dict(zip(self.columns, vals), chunk=chunk) for vals in zip(*(data[c] for c in self.columns))]
        with self.engine.begin() as conn:
            conn.execute(self.staging.delete().where(self.staging.c.chunk == chunk))
            for start in range(0, len(rows), 20_000):
                conn.execute(self.staging.insert(), rows[start : start + 20_000])

    def finish(self, n_chunks: int) -> str:
        from sqlalchemy import select

        done = self.done_chunks()
        missing = [c for c in range(n_chunks) if c not in done]
        if missing:
            raise RuntimeError(f"export chunks {missing[:5]} are missing from {self.staging.name}")
        with self.engine.begin() as conn:  # the old table stays until this transaction commits
            self.target.drop(conn, checkfirst=True)
            self.target.create(conn)
            cols = [self.staging.c[c] for c in self.columns]
            conn.execute(self.target.insert().from_select(self.columns, select(*cols).order_by(self.staging.c.chunk)))
            self.staging.drop(conn)
            self.spec_table.drop(conn)
        return f"table {self.name}"


def open_sink(out: str | None, fmt: str, table: str | None, engine: Any, spec: dict[str, Any], schema: pa.Schema,
              *, restart: bool = False) -> Sink:
    """The sink for ``--out FILE --format F`` or ``--table NAME`` (exactly one of them)."""
    if (out is None) == (table is None):
        raise ConfigError("give exactly one of --out FILE or --table NAME")
    if table is not None:
        return SqlTableSink(engine, table, spec, schema, restart=restart)
    return FileSink(out, fmt, spec, restart=restart)  # type: ignore[arg-type]
