"""``recsys export --engine ray``: the export's chunks ranked in Ray Data model actors.

How it maps to Ray Data. The unit of work is the export's own chunk (``--chunk-size`` users or items,
the unit of resume). Each chunk still to write is one row of a Ray Data dataset, ``(chunk, payload)``,
and :func:`~recsys.engines.ray_engine.map_batches_ordered` runs ``from_arrow(rows) ->
map_batches(ModelActor, ActorPoolStrategy(size=actors), batch_size=1)`` over them; the ranked chunks
come back on the driver in chunk order while later chunks are still being ranked.

What the driver does. :func:`recsys.export.job.run_export` reads every user's history from the
database exactly as the local engine does, then calls the runner this module builds with the chunks
still to write. The runner ships per chunk only what is small -- the chunk index and, for
recommendations, the users' ids and their history arrays (``indptr``, ``items``, ``rank``, ``weight``;
for similar items, the items' ids) -- and yields each returned chunk as a :class:`pyarrow.Table`, so
``run_export`` writes it through the same sink as the local engine (resume, temporary file and rename,
manifest: unchanged). ``ray.page_size`` users (items) go to Ray as one Ray Data job. The driver checks
that every chunk was ranked with one serving state, and that its model and alignment are the registry's
active ones.

What the actors hold. Each actor builds its own serving state once, in its constructor, the way the
CLI does (``Runtime.from_config(config)`` then :meth:`ExportContext.from_runtime`): item ids, content
vectors, the :class:`~recsys.ranking.ranker.FeedRanker` and the similar-items index. The factory it
gets is a module-level function with the configuration as a plain dict (paths made absolute), so
nothing large is pickled, and the actor checks that its filter mask equals the driver's (same
catalogue). It then ranks each chunk with the local engine's own functions
(:func:`~recsys.export.job.rank_feed_chunk`, :func:`~recsys.export.job.similar_chunk`) and returns the
chunk's table as Arrow IPC bytes, so both engines write the same rows. The actors read the catalogue,
embeddings and the artifact registry themselves: every Ray node needs the database and
``artifacts_dir`` (and the text encoder's model) reachable.

Importing this module does not import Ray; building a runner without Ray installed raises a
:class:`~recsys.errors.RecsysError` that says how to install it.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recsys.cf.history import History
from recsys.config import Config
from recsys.engines.ray_engine import BatchFn, import_ray, map_batches_ordered, ray_session
from recsys.engines.settings import RayConfig
from recsys.errors import ArtifactError, ConfigError, RecsysError, UnknownIdError
from recsys.export.job import ExportContext, ExportOptions, rank_feed_chunk, similar_chunk

log = logging.getLogger(__name__)

__all__ = ["ChunkRunner", "build_context", "make_chunk_fn", "ray_chunk_runner", "worker_settings"]

ChunkRunner = Callable[[Sequence[int], np.ndarray, History | None, ExportOptions, np.ndarray],
                       Iterator[tuple[int, pa.Table]]]
"""``(todo, keys, history, opts, allowed) -> (chunk, table)`` pairs, as ``run_export(rank_chunks=)`` calls it."""

CHUNK, PAYLOAD, TABLE, VERSIONS = "chunk", "payload", "table", "versions"
"""Column names of the Ray Data rows: ``(chunk, payload)`` in, ``(chunk, table, versions)`` out."""
CHECKED_VERSIONS = ("model", "align")
"""Serving-state versions the driver compares with the registry's active artifacts."""


# --- configuration for the workers ---------------------------------------------------------------


def _absolute_if_local(name: str) -> str:
    """A model name that is a folder relative to the cwd, made absolute (a worker's cwd may differ)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if not path.is_absolute() and path.exists() else name


def worker_settings(config: Config) -> dict[str, Any]:
    """The configuration as a plain, picklable dict for the actors, with its local paths made absolute.

    Raises:
        ConfigError: an in-memory SQLite database (the actors could not see it).
    """
    from sqlalchemy.engine import make_url

    data = config.model_dump(mode="json")
    data["data_dir"] = str(Path(config.data_dir).expanduser().resolve())
    if config.artifacts_dir is not None:
        data["artifacts_dir"] = str(Path(config.artifacts_dir).expanduser().resolve())
    if config.database.url:
        url = make_url(config.database.url)
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                raise ConfigError(
                    "database.url: --engine ray needs a database the Ray actors can open; an in-memory SQLite "
                    f"database ({config.database.url!r}) is private to this process. Use a SQLite file or PostgreSQL"
                )
            if not Path(url.database).is_absolute():
                data["database"]["url"] = url.set(database=str(Path(url.database).resolve())).render_as_string(
                    hide_password=False
                )
    for space in ("text", "image"):
        data["encoders"][space]["name"] = _absolute_if_local(data["encoders"][space]["name"])
    return data


# --- run inside the Ray actors -------------------------------------------------------------------


def build_context(settings: dict[str, Any]) -> ExportContext:
    """The serving state an export ranks with, loaded as the CLI loads it (runs once per actor).

    Raises:
        ArtifactError: the serving state cannot be loaded (no trained model, unreachable database or
            artifacts); the message names this host.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from recsys.serving import Runtime

    host = socket.gethostname()
    try:
        rt = Runtime.from_config(Config.model_validate(settings))
    except (SQLAlchemyError, OSError) as exc:
        raise ArtifactError(
            f"Ray export actor on {host}: cannot open the database or the artifacts ({type(exc).__name__}: {exc}); "
            "with --engine ray every Ray node needs the database and artifacts_dir reachable"
        ) from exc
    try:
        return ExportContext.from_runtime(rt)
    except RecsysError as exc:
        raise ArtifactError(f"Ray export actor on {host}: {exc}") from exc
    finally:
        rt.engine.dispose()  # the context holds arrays and indexes only


def _recommendations_payload(user_ids: Sequence[str], history: History) -> bytes:
    return pickle.dumps(
        ([str(u) for u in user_ids], history.n_items, history.indptr, history.items, history.rank, history.weight),
        protocol=5,
    )


def _similar_payload(item_ids: Sequence[str]) -> bytes:
    return pickle.dumps([str(i) for i in item_ids], protocol=5)


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _table_from_bytes(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def make_chunk_fn(settings: dict[str, Any], opts: ExportOptions, allowed: np.ndarray) -> BatchFn:
    """Model actor set-up: load the serving state once; ``{chunk, payload} -> {chunk, table, versions}``.

    Args:
        settings: :func:`worker_settings` of the driver's configuration.
        opts: the export's options.
        allowed: ``(n_items,)`` bool, the driver's filter mask; the actor's own must be equal.

    Raises:
        ArtifactError: the actor's serving state differs from the driver's (the catalogue or the
            availability changed since the export started).
    """
    ctx = build_context(settings)
    mine = ctx.allowed(opts)
    if mine.shape != allowed.shape or not np.array_equal(mine, allowed):
        raise ArtifactError(
            f"Ray export actor on {socket.gethostname()}: its catalogue ({len(mine)} items, {int(mine.sum())} allowed) "
            f"differs from the driver's ({len(allowed)} items, {int(allowed.sum())} allowed); the catalogue or the "
            "availability changed since the export started -- run the export again"
        )
    versions = json.dumps(ctx.versions, sort_keys=True)
    row_of = {item: r for r, item in enumerate(ctx.ids)} if opts.what == "similar" else {}

    def rank(payload: bytes) -> pa.Table:
        if opts.what == "recommendations":
            user_ids, n_items, indptr, items, rank_, weight = pickle.loads(payload)
            if n_items != len(ctx.ids):
                raise ArtifactError(
                    f"Ray export actor: histories over {n_items} items, but its catalogue has {len(ctx.ids)}; "
                    "the catalogue changed since the export started -- run the export again"
                )
            history = History(len(user_ids), n_items, indptr, items, rank_, weight)
            return rank_feed_chunk(ctx, user_ids, history, opts, allowed)
        item_ids = pickle.loads(payload)
        unknown = [i for i in item_ids if i not in row_of]
        if unknown:
            raise UnknownIdError(f"Ray export actor: unknown item id(s) {unknown[:5]} ({len(unknown)} in all)")
        return similar_chunk(ctx, np.array([row_of[i] for i in item_ids], dtype=np.int64), opts, allowed)

    def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tables = [_table_bytes(rank(p)) for p in batch[PAYLOAD]]
        n = len(tables)
        return {
            CHUNK: np.asarray(batch[CHUNK], dtype=np.int64),
            TABLE: np.array(tables, dtype=object),
            VERSIONS: np.array([versions] * n, dtype=object),
        }

    return fn


# --- the driver ----------------------------------------------------------------------------------


def _active_versions(config: Config) -> dict[str, str | None]:
    """The registry's active feed model and alignment (what a freshly loaded serving state uses)."""
    from recsys.store.artifacts import active_artifact
    from recsys.store.db import engine_from_config

    engine = engine_from_config(config)
    try:
        feed, align = active_artifact(engine, "feed"), active_artifact(engine, "align")
    finally:
        engine.dispose()
    return {"model": feed.version if feed else None, "align": align.version if align else None}


def _payload(c: int, keys: np.ndarray, history: History | None, chunk_size: int) -> bytes:
    start, stop = c * chunk_size, min((c + 1) * chunk_size, len(keys))
    if history is None:
        return _similar_payload(keys[start:stop].tolist())
    return _recommendations_payload(keys[start:stop].tolist(), history.select(np.arange(start, stop)))


def run_chunks_on_ray(
    config: Config,
    ray_cfg: RayConfig,
    todo: Sequence[int],
    keys: np.ndarray,
    history: History | None,
    opts: ExportOptions,
    allowed: np.ndarray,
) -> Iterator[tuple[int, pa.Table]]:
    """Rank the chunks ``todo`` in Ray model actors; yield ``(chunk, table)`` in ``todo`` order.

    Joins the Ray instance already running in this process, else connects to ``ray_cfg.address``
    (or starts a local instance of ``ray_cfg.num_cpus`` CPUs, stopped when the iteration ends).

    Raises:
        ArtifactError: the actors ranked with another serving state than the registry's active one,
            or with different ones (a model trained during the export).
    """
    todo = [int(c) for c in todo]
    if not todo:
        return
    settings = worker_settings(config)
    expected = _active_versions(config)
    make_fn = functools.partial(make_chunk_fn, settings, opts, allowed)
    per_job = max(1, ray_cfg.page_size // opts.chunk_size)
    seen: str | None = None
    with ray_session(ray_cfg.address, ray_cfg.num_cpus):
        for first in range(0, len(todo), per_job):
            page = todo[first : first + per_job]
            table = {
                CHUNK: np.array(page, dtype=np.int64),
                PAYLOAD: np.array([_payload(c, keys, history, opts.chunk_size) for c in page], dtype=object),
            }
            pos = 0
            for out in map_batches_ordered(
                table, make_fn, batch_size=1, actors=min(ray_cfg.actors, len(page)),
                cpus_per_actor=ray_cfg.cpus_per_actor, gpus_per_actor=ray_cfg.gpus_per_actor,
            ):
                for c, data, versions in zip(out[CHUNK], out[TABLE], out[VERSIONS]):
                    if int(c) != page[pos]:
                        raise RuntimeError(f"Ray returned chunk {int(c)} where chunk {page[pos]} was expected")
                    pos += 1
                    if seen is None:
                        _check_versions(str(versions), expected)
                        seen = str(versions)
                        log.info("Ray actors rank with %s", seen)
                    elif versions != seen:
                        raise ArtifactError(
                            f"Ray export actors ranked with different serving states ({seen} and {versions}); "
                            "a model was trained or an index rebuilt during the export -- run the export again"
                        )
                    yield int(c), _table_from_bytes(data)


def _check_versions(versions: str, expected: dict[str, str | None]) -> None:
    got = json.loads(versions)
    wrong = {k: (got.get(k), expected[k]) for k in CHECKED_VERSIONS if got.get(k) != expected[k]}
    if wrong:
        detail = ", ".join(f"{k} {a!r} (active: {b!r})" for k, (a, b) in wrong.items())
        raise ArtifactError(
            f"Ray export actors loaded {detail}; a model was trained or activated during the export -- run it again"
        )


def ray_chunk_runner(config: Config, address: str | None = None) -> ChunkRunner:
    """The chunk runner of ``recsys export --engine ray``: pass it to ``run_export(rank_chunks=)``.

    Args:
        config: the command's configuration (the actors load their serving state from it).
        address: Ray address (``auto`` or ``HOST:6379``); ``None``: ``config.ray.address`` (``None``
            there too: a local Ray instance for the run).

    Raises:
        RecsysError: Ray is not installed (says how to install it).
    """
    import_ray()  # fail before the histories are read
    ray_cfg = config.ray if address is None else config.ray.model_copy(update={"address": address})
    return functools.partial(run_chunks_on_ray, config, ray_cfg)
