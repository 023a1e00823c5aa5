"""Ray Data engine: a job's per-batch function in model actors, rows back in order on the driver.

A batch job that runs locally as ``for batch in batches: out = fn(batch); write(out)`` runs on Ray as::

    with ray_session(address, num_cpus):
        for out in map_batches_ordered(table, make_fn, batch_size=64, actors=2):
            write(out)

- ``table``: the job's input rows as columns (``dict[str, np.ndarray]`` or a ``pandas.DataFrame``),
  read on the driver exactly as the local path reads them.
- ``make_fn``: a picklable zero-argument factory (e.g. a :func:`functools.partial` of a module-level
  function) that each actor calls **once** in its constructor to build its model, and that returns the
  per-batch function ``fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]`` (one output row per
  input row) -- the same function the local path applies. Pass a factory, not a built model: the model
  is built on the worker, on the worker's device.
- The output batches come back on the driver in input order, so the driver writes them with the same
  writer as the local path.

The input is cut into Ray blocks of exactly ``batch_size`` rows, so each actor call sees the same
batches as a local loop over ``table`` in steps of ``batch_size`` would.

Ray is imported only by the functions of this module, never at import time; without Ray installed they
raise a :class:`~recsys.errors.RecsysError` that says how to install it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from recsys.errors import RecsysError

log = logging.getLogger(__name__)

BatchFn = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
"""A per-batch function: columns in, columns out, one output row per input row."""
T = TypeVar("T")

INSTALL_HINT = "pip install 'recsys[ray]'"
ROW = "__recsys_row__"
"""Input row number, added to every block and checked on the way back (a reserved column name)."""
ERROR = "__recsys_error__"
"""Output column of a batch whose function raised a :class:`RecsysError` (the pickled error)."""


def import_ray() -> ModuleType:
    """``ray`` with ``ray.data`` loaded.

    Raises:
        RecsysError: Ray (or Ray Data) is not installed; the message says how to install it.
    """
    try:
        import ray
        import ray.data  # loads the submodule
    except ImportError as exc:
        raise RecsysError(
            f"--engine ray needs Ray Data, which is not installed ({exc}); install it with {INSTALL_HINT} "
            "(or pip install 'ray[data]>=2.9'), or use the default --engine local"
        ) from exc
    return ray


def _verbose() -> bool:
    return logging.getLogger("recsys").getEffectiveLevel() <= logging.INFO


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to a Ray cluster, or start a local Ray instance, unless Ray is already initialised.

    Args:
        address: ``None`` starts a local instance (no dashboard); ``"auto"`` joins the cluster this
            machine is a node of; ``"HOST:6379"`` joins the cluster whose head (GCS) is there. Ray
            Client addresses (``ray://``) are refused: Ray Data's streaming executor needs a real
            driver (Ray 2.60 fails with ``'Worker' object has no attribute 'core_worker'``).
        num_cpus: CPUs of a local instance (``None``: all of this machine's). Ignored with ``address``:
            a cluster's resources are the cluster's.

    Returns:
        ``True`` if this call initialised Ray (the caller then owns the connection and should call
        ``ray.shutdown()``), ``False`` if it was already initialised (left as it is).

    Raises:
        RecsysError: Ray is not installed, or the cluster at ``address`` cannot be reached.
    """
    ray = import_ray()
    if address is not None and not address.strip():
        raise RecsysError("ray address is empty; give 'auto', HOST:PORT, or none for a local Ray instance")
    if address is not None and address.strip().lower().startswith("ray://"):
        raise RecsysError(
            f"ray address {address!r}: Ray Data jobs do not run over Ray Client (ray://); run the command on a "
            "node of the cluster with --ray-address auto, e.g. as a Ray job: ray job submit --address "
            "http://HEAD:8265 -- recsys embed --engine ray --ray-address auto"
        )
    if ray.is_initialized():
        return False
    verbose = _verbose()
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.INFO if verbose else logging.ERROR,
    }
    try:
        if address is None:  # "local": a new instance, never a cluster that `ray start` left on this machine
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        else:
            if num_cpus is not None:
                log.info("ray num_cpus=%d is for a local instance; the cluster at %s keeps its own", num_cpus, address)
            ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError) as exc:
        raise RecsysError(
            f"cannot reach the Ray cluster at address {address!r}: {exc}. Use 'auto' on a node of a running "
            "cluster (ray start --head) or HEAD:6379, or no address for a local instance; a cluster with token "
            "authentication also needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from exc
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # It warns that progress bars are off when they are asked to be: not news.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
    log.info("using %s: %s", where, ray.cluster_resources())
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """:func:`init_ray` for a ``with`` block; shuts Ray down afterwards only if the block started it.

    Then it also restores the environment variables that ``ray.init`` sets in this process
    (``RAY_AUTH_MODE``, ``PYTHONBREAKPOINT``, ...).
    """
    environ = dict(os.environ)
    started = init_ray(address, num_cpus)
    ray = import_ray()
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
            os.environ.clear()
            os.environ.update(environ)


def _recsys_cause(exc: BaseException) -> RecsysError | None:
    """The :class:`RecsysError` a worker raised, found in ``exc``'s chain, or ``None``.

    Ray wraps a worker's exception in a ``RayTaskError`` that also subclasses the exception's type
    (and whose message is the worker's whole traceback); the original is its ``cause``.
    """
    from ray.exceptions import RayError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, RecsysError) and not isinstance(e, RayError):
            return e
        todo.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    return None


@contextlib.contextmanager
def _unwrap_ray_errors() -> Iterator[None]:
    """Re-raise a :class:`RecsysError` that a worker raised as itself (a clear one-line message)."""
    try:
        yield
    except Exception as exc:
        cause = _recsys_cause(exc)
        if cause is None or cause is exc:
            raise
        raise cause from exc


def _pickled_error(exc: RecsysError) -> bytes:
    try:
        return pickle.dumps(exc)
    except Exception:  # noqa: BLE001 - an unpicklable subclass still travels as its message
        return pickle.dumps(RecsysError(f"{type(exc).__name__}: {exc}"))


class ModelActor:
    """Ray Data callable class: builds the batch function (and its model) once, then maps batches.

    A :class:`RecsysError` from ``make_fn`` or from the batch function (a model that cannot be
    loaded, a bad input) is returned to the driver in the column :data:`ERROR` and raised there as
    itself: Ray would otherwise turn it into an actor failure whose message is a worker traceback.
    """

    def __init__(self, make_fn: Callable[[], BatchFn]) -> None:
        self._fn: BatchFn | None = None
        self._error: bytes | None = None
        try:
            self._fn = make_fn()
        except RecsysError as exc:
            self._error = _pickled_error(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch.pop(ROW)
        if self._fn is None or self._error is not None:
            return {ROW: rows, ERROR: np.array([self._error] * len(rows), dtype=object)}
        try:
            out = dict(self._fn(batch))
        except RecsysError as exc:
            return {ROW: rows, ERROR: np.array([_pickled_error(exc)] * len(rows), dtype=object)}
        for name, col in out.items():
            if len(col) != len(rows):
                raise ValueError(
                    f"the batch function returned {len(col)} values in column {name!r} for {len(rows)} rows; "
                    "it must return one output row per input row"
                )
        if ROW in out or ERROR in out:
            raise ValueError(f"column names {ROW!r} and {ERROR!r} are reserved")
        out[ROW] = rows
        return out


def _columns(table: Any) -> dict[str, np.ndarray]:
    if not isinstance(table, Mapping):  # a pandas DataFrame
        table = {str(c): table[c].to_numpy() for c in table.columns}
    cols = {str(k): np.asarray(v) for k, v in table.items()}
    if not cols:
        raise ValueError("the input table has no columns")
    if ROW in cols or ERROR in cols:
        raise ValueError(f"column names {ROW!r} and {ERROR!r} are reserved")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"the input columns differ in length: {lengths}")
    return cols


def map_batches_ordered(
    table: Mapping[str, Any] | Any,
    make_fn: Callable[[], BatchFn],
    *,
    batch_size: int,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    progress: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Apply a model actor's batch function to ``table``; yield the output batches in input order.

    Ray must be initialised (:func:`init_ray` / :func:`ray_session`). Runs as a Ray Data job
    ``from_arrow(blocks) -> map_batches(ModelActor, ActorPoolStrategy(size=actors))``, streaming:
    output batches arrive while later ones are still being computed.

    Args:
        table: input columns (``dict`` of equal-length arrays or sequences, or a ``pandas.DataFrame``).
            Multi-dimensional numeric arrays are fine (Ray tensor columns).
        make_fn: picklable factory run once per actor, returning the per-batch function (see the
            module docstring).
        batch_size: rows per call of the batch function; every batch but the last has exactly this many.
        actors: size of the actor pool (each holds one model).
        cpus_per_actor: CPUs Ray reserves per actor (Ray sets the actor's thread count from it).
        gpus_per_actor: GPUs Ray reserves per actor (0: none).
        progress: show Ray Data's progress bars.

    Yields:
        The batch function's output columns as numpy arrays, one dict per input batch, in order.

    Raises:
        RecsysError: Ray is not installed or not initialised, or a worker raised one (re-raised as is).
        ValueError: bad arguments, or a batch function that changes the number of rows.
    """
    if batch_size <= 0 or actors <= 0:
        raise ValueError(f"batch_size and actors must be > 0, got {batch_size} and {actors}")
    cols = _columns(table)
    n = len(next(iter(cols.values())))
    if n == 0:
        return
    ray = import_ray()
    if not ray.is_initialized():
        raise RecsysError("Ray is not initialised: call recsys.engines.ray_engine.init_ray() (or ray_session()) first")
    from ray.data import ActorPoolStrategy, DataContext
    from ray.data.block import BlockAccessor

    blocks = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        block = {ROW: np.arange(start, stop, dtype=np.int64), **{k: v[start:stop] for k, v in cols.items()}}
        blocks.append(BlockAccessor.batch_to_block(block))
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = progress
    try:
        with _unwrap_ray_errors():
            dataset = ray.data.from_arrow(blocks).map_batches(
                ModelActor,
                fn_constructor_kwargs={"make_fn": make_fn},
                compute=ActorPoolStrategy(size=actors),
                batch_size=batch_size,
                batch_format="numpy",
                num_cpus=cpus_per_actor,
                num_gpus=gpus_per_actor if gpus_per_actor > 0 else None,
            )
            expected = 0
            for out in dataset.iter_batches(batch_format="numpy", batch_size=None):
                rows = np.asarray(out.pop(ROW))
                if len(rows) == 0:
                    continue
                if ERROR in out:
                    raise pickle.loads(out[ERROR][0])  # a RecsysError from our own actor
                if rows[0] != expected or np.any(np.diff(rows) != 1):
                    raise RuntimeError(f"Ray returned rows out of order: expected row {expected}, got {rows[:5]}...")
                expected += len(rows)
                yield out
            if expected != n:
                raise RuntimeError(f"Ray returned {expected} of {n} rows")
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved


def run_remote(fn: Callable[..., T], *args: Any, num_cpus: float = 1.0, num_gpus: float = 0.0) -> T:
    """``fn(*args)`` as one Ray task (e.g. to load a model where the actors will run); waits for it.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one). A
    :class:`RecsysError` raised by ``fn`` is re-raised as is.
    """
    ray = import_ray()
    if not ray.is_initialized():
        raise RecsysError("Ray is not initialised: call recsys.engines.ray_engine.init_ray() (or ray_session()) first")
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_call)
    with _unwrap_ray_errors():
        return ray.get(task.remote(fn, *args))  # type: ignore[no-any-return]


def _call(fn: Callable[..., T], *args: Any) -> T:
    """Runs on a worker: ``ray.remote`` wants a plain function, ``fn`` may be a ``functools.partial``."""
    return fn(*args)
