"""Load an evaluation data set from its two CSV files (``items.csv`` + ``events.csv``).

The offline protocols (``EVALUATION.md``) are defined on the files themselves: items are indexed in
``items.csv`` row order, and ties in time are broken by the item id (as a number when every id is a
plain integer, as MovieLens's are; as a string otherwise, e.g. H&M's zero-padded ``article_id``).
This module is the IO edge of the evaluation: everything downstream works on the arrays it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.cf.history import item_tie_rank
from recsys.config import Preset
from recsys.errors import InputFormatError

log = logging.getLogger(__name__)

__all__ = ["EvalDataset", "Events", "detect_preset", "load_dataset", "parse_times"]


@dataclass(frozen=True)
class Events:
    """Interactions as row numbers; one entry per event (duplicates kept).

    Attributes:
        user: ``(n_events,)`` int64 user row (index into ``EvalDataset.user_ids``).
        item: ``(n_events,)`` int64 item row (``items.csv`` row order).
        ts: ``(n_events,)`` int64 unix seconds.
    """

    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, index: np.ndarray) -> Events:
        """The events selected by a boolean mask or an index array."""
        return Events(self.user[index], self.item[index], self.ts[index])


@dataclass(frozen=True)
class EvalDataset:
    """A catalogue and its event log, ready for a protocol.

    Attributes:
        name: the folder name (for reports).
        root: the folder; image paths in ``items`` are relative to it.
        item_ids: ``(n_items,)`` external item ids as strings, ``items.csv`` row order.
        user_ids: ``(n_users,)`` external user ids as strings, in order of first appearance.
        items: the ``items.csv`` table, every column as a string (missing values are ``""``).
        events: every event of ``events.csv``.
        tie_rank: ``(n_items,)`` int64, the position of each item in the protocol's tie-break order.
    """

    name: str
    root: Path
    item_ids: np.ndarray
    user_ids: np.ndarray
    items: pd.DataFrame
    events: Events
    tie_rank: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])


def parse_times(values: pd.Series) -> np.ndarray:
    """Unix seconds from a column of integers (unix time) or dates / datetimes (``2020-09-22``)."""
    as_num = pd.to_numeric(values, errors="coerce")
    if not as_num.isna().any():
        return as_num.to_numpy(dtype=np.int64)
    parsed = pd.to_datetime(values, errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        raise InputFormatError(f"cannot read {int(bad.sum())} timestamps, e.g. {values[bad].iloc[0]!r}")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)  # any datetime resolution
    return seconds.to_numpy(dtype=np.int64)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"cannot read {path}: {exc}") from exc


def _require(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputFormatError(f"{path}: missing column(s) {missing}; it has {list(frame.columns)}")


def load_dataset(items_csv: str | Path, events_csv: str | Path, preset: Preset) -> EvalDataset:
    """Read the two files with the column names of ``preset`` (``config.ingest.presets[...]``).

    Raises:
        InputFormatError: unreadable file, missing column, duplicate item id, unparsable time, or an
            event on an item that ``items.csv`` does not list.
    """
    items_csv, events_csv = Path(items_csv), Path(events_csv)
    items = _read_csv(items_csv)
    events = _read_csv(events_csv)
    id_col = preset.items.id
    ev = preset.events
    _require(items, [id_col], items_csv)
    _require(events, [ev.user, ev.item, ev.timestamp], events_csv)
    item_ids = items[id_col].to_numpy(dtype=object)
    if not items[id_col].is_unique:
        dup = items[id_col][items[id_col].duplicated()].iloc[0]
        raise InputFormatError(f"{items_csv}: item id {dup!r} appears more than once")
    item_index = pd.Index(item_ids)
    item_rows = item_index.get_indexer(events[ev.item])
    if (item_rows < 0).any():
        unknown = events[ev.item][item_rows < 0].iloc[0]
        raise InputFormatError(f"{events_csv}: event on item {unknown!r} which {items_csv.name} does not list")
    user_codes, user_ids = pd.factorize(events[ev.user], sort=False)
    data = EvalDataset(
        name=items_csv.parent.name,
        root=items_csv.parent,
        item_ids=item_ids,
        user_ids=np.asarray(user_ids, dtype=object),
        items=items,
        events=Events(
            user=user_codes.astype(np.int64),
            item=item_rows.astype(np.int64),
            ts=parse_times(events[ev.timestamp]),
        ),
        tie_rank=item_tie_rank(item_ids),
    )
    log.info("loaded %s: %d items, %d users, %d events", data.name, data.n_items, data.n_users, len(data.events))
    return data


def detect_preset(items_csv: str | Path, events_csv: str | Path, presets: dict[str, Preset]) -> str:
    """The preset that fits the files' headers best.

    A preset fits when its item id column and its event user / item / time columns are all present; among
    those, the one with the most of its other mapped columns present wins (ties: the first listed).

    Raises:
        InputFormatError: no preset fits (the message lists the headers and the presets).
    """
    items_head = list(_read_header(Path(items_csv)))
    events_head = list(_read_header(Path(events_csv)))
    best: tuple[int, str] | None = None
    for name, preset in presets.items():
        ev, it = preset.events, preset.items
        if it.id not in items_head or not all(c in events_head for c in (ev.user, ev.item, ev.timestamp)):
            continue
        optional_items = [c for c in (it.title, it.category, it.image, it.price, it.available, *it.text) if c]
        optional_events = [c for c in (ev.event_type, ev.value, ev.event_id) if c]
        present = sum(c in items_head for c in optional_items) + sum(c in events_head for c in optional_events)
        missing = len(optional_items) + len(optional_events) - present
        score = present - 2 * missing
        if best is None or score > best[0]:
            best = (score, name)
    if best is not None:
        return best[1]
    raise InputFormatError(
        f"no ingest preset matches the columns {items_head} / {events_head}; "
        f"pass --preset (one of {sorted(presets)}) or add a preset to the config"
    )


def _read_header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"cannot read {path}: {exc}") from exc
