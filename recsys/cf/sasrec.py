"""A sequence-aware CF component: a small SASRec-style causal self-attention model over each user's items.

The model (Kang & McAuley, "Self-Attentive Sequential Recommendation", 2018, in a small pre-norm form):
item embeddings (row 0 is padding) plus learned position embeddings, ``blocks`` causal self-attention
blocks of width ``dim``, a final layer norm; the hidden state at a user's newest item, dotted with the
item embeddings, scores every item as the user's next one. It is trained on each user's distinct items
in time order (:class:`~recsys.cf.history.History` keeps them newest first) by next-item prediction:
every position of a window of ``max_len`` items predicts the item after it, with a full softmax
cross-entropy over the catalogue up to ``full_softmax_max_items`` items and over the positive and
``negatives`` shared uniform negatives above. Long histories are cut into consecutive windows, newest
first. Training is seeded and deterministic on CPU; torch trains on ``train_threads`` threads (0: one or
all cores, whichever a few timed steps find faster) and scores on ``threads``.

How long it trains is chosen on validation (:func:`fit_sasrec` with a ``validate`` callback scores the
model every ``eval_every`` epochs and keeps the best epoch count) within a wall-clock limit; the final
fit on the whole history then runs that many epochs. Its weight in the hybrid's CF score
(``HybridParams.sasrec_weight``) is chosen on validation like the transitions' (0: off), so a log
whose order carries nothing gets weight 0.

Like :class:`~recsys.cf.itemitem.ItemItem`, one object serves fitting, the evaluation, the feed ranker and
the artifact (:meth:`SasrecModel.scores`), and :meth:`SasrecModel.laid_over` maps a serving catalogue
onto the model's rows: items the model never saw are left out of a user's sequence and score the user's
mean over the trained items (neutral once standardised).
torch is imported where used, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.cf.history import History, filter_history
from recsys.cf.itemitem import compose_rows
from recsys.cf.settings import SasrecConfig

log = logging.getLogger(__name__)

__all__ = ["SasrecFit", "SasrecModel", "fit_sasrec", "sequences", "training_windows"]

TRAINED = "__trained_items__"
"""Key of the trained-items mask in the saved ``.npz`` (beside the state dict's tensors)."""


@dataclass(frozen=True)
class SasrecModel:
    """Trained SASRec weights over the model's items, optionally laid over another catalogue.

    Attributes:
        settings: the architecture (``dim``, ``blocks``, ``heads``, ``max_len``) it was built with.
        n_items: items of the model (embedding rows ``1 .. n_items``; row 0 is padding).
        state: the torch state dict as float32 numpy arrays.
        epochs: epochs it was trained for.
        trained: ``(n_items,)`` bool, items seen in training (the others' embeddings are untrained noise:
            they score the user's mean over the trained items, a neutral score once standardised).
        rows: ``(n_catalogue,)`` int64 model row of each catalogue row (``-1``: unknown to the model);
            ``None`` when the catalogue is the model's own rows.
    """

    settings: SasrecConfig
    n_items: int
    state: dict[str, np.ndarray]
    epochs: int = 0
    trained: np.ndarray | None = None
    rows: np.ndarray | None = None
    _net: list[Any] = field(default_factory=list, repr=False, compare=False)  # built once, lazily

    def network(self) -> Any:
        """The torch module in eval mode (built from ``state`` on first use)."""
        if not self._net:
            import torch

            net = _build(self.settings, self.n_items)
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state.items()})
            net.eval()
            self._net.append(net)
        return self._net[0]

    def scores(self, rows: History, batch: int = 512) -> np.ndarray:
        """Raw next-item scores ``(rows.n_users, n_catalogue)`` float32 of users given by their histories
        (catalogue rows); users without a known item score 0 everywhere, items the model was not trained on
        (or never saw) score the user's mean over the trained items."""
        import torch

        hist = rows if self.rows is None else _to_model_rows(rows, self.rows)
        seq = sequences(hist, self.settings.max_len)
        out = np.zeros((rows.n_users, self.n_items), np.float32)
        net = self.network()
        with torch.inference_mode(), _threads(self.settings.threads):
            emb = net.item.weight[1:]
            for lo in range(0, seq.shape[0], batch):
                part = torch.from_numpy(_trim(seq[lo : lo + batch]))
                out[lo : lo + batch] = (net(part)[:, -1] @ emb.T).numpy()
        trained = np.ones(self.n_items, bool) if self.trained is None else self.trained
        fill = out[:, trained].mean(axis=1, keepdims=True) if trained.any() else np.zeros((out.shape[0], 1), np.float32)
        out[:, ~trained] = fill
        out[hist.counts == 0] = 0.0
        if self.rows is None:
            return out
        full = np.repeat(np.where(hist.counts[:, None] > 0, fill, 0.0).astype(np.float32), self.rows.shape[0], axis=1)
        known = self.rows >= 0
        full[:, known] = out[:, self.rows[known]]
        return full

    def laid_over(self, model_rows: np.ndarray) -> SasrecModel:
        """The same model over another catalogue: ``model_rows`` ``(n,)`` int64, ``-1`` for unknown items."""
        return SasrecModel(self.settings, self.n_items, self.state, self.epochs, self.trained,
                           compose_rows(self.rows, model_rows, self.n_items), self._net)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path, name: str = "sasrec") -> list[str]:
        """Write ``<name>.npz`` (the weights) and ``<name>.json`` (settings, items, epochs)."""
        if self.rows is not None:
            raise ValueError("save the model's own SASRec weights, not ones laid over another catalogue")
        trained = np.ones(self.n_items, bool) if self.trained is None else self.trained
        np.savez(directory / f"{name}.npz", **self.state, **{TRAINED: trained})
        (directory / f"{name}.json").write_text(json.dumps(
            {"settings": self.settings.model_dump(mode="json"), "n_items": self.n_items, "epochs": self.epochs}))
        return [f"{name}.npz", f"{name}.json"]

    @classmethod
    def load(cls, directory: Path, name: str = "sasrec") -> SasrecModel:
        """Read what :meth:`save` wrote."""
        meta = json.loads((directory / f"{name}.json").read_text())
        with np.load(directory / f"{name}.npz") as z:
            state = {k: z[k] for k in z.files if k != TRAINED}
            trained = z[TRAINED] if TRAINED in z.files else None
        return cls(SasrecConfig.model_validate(meta["settings"]), int(meta["n_items"]), state, int(meta["epochs"]),
                   trained)


@dataclass
class SasrecFit:
    """What :func:`fit_sasrec` returns: the model (``None`` when skipped) and a report for the manifest."""

    model: SasrecModel | None
    report: dict[str, Any]


def sequences(history: History, max_len: int) -> np.ndarray:
    """Each user's newest ``max_len`` items, oldest first, as ``(n_users, max_len)`` int64 embedding rows
    (item row + 1), left-padded with 0."""
    out = np.zeros((history.n_users, max_len), np.int64)
    user = np.repeat(np.arange(history.n_users), history.counts)
    rank = history.rank.astype(np.int64)
    ok = rank < max_len
    out[user[ok], max_len - 1 - rank[ok]] = history.items[ok] + 1
    return out


def training_windows(history: History, max_len: int, max_windows: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Next-item training windows: ``(inputs, targets)``, each ``(n_windows, max_len)`` int64 embedding
    rows, left-padded with 0; ``targets[w, p]`` is the item that followed ``inputs[w, p]``.

    A user's items (newest first, rank ``r``) are cut into windows of ``max_len`` targets: the item at rank
    ``r`` (``r < n - 1``) is a target in window ``r // max_len``, at position ``max_len - 1 - r % max_len``,
    with the item at rank ``r + 1`` as its input there. ``max_windows`` > 0 keeps each user's newest ones.
    """
    counts = history.counts
    if max_windows > 0:  # the older items beyond the kept windows are left out (the oldest kept is an input)
        keep = history.rank < np.repeat(np.minimum(counts, max_windows * max_len + 1), counts)
        history = filter_history(history, keep)
        counts = history.counts
    n_win = np.maximum(counts - 1, 0)
    n_win = (n_win + max_len - 1) // max_len
    first = np.concatenate([[0], np.cumsum(n_win)]).astype(np.int64)
    user = np.repeat(np.arange(history.n_users), counts)
    rank = history.rank.astype(np.int64)
    is_target = rank < counts[user] - 1
    pos_t = np.flatnonzero(is_target)  # pair index of the target; its input is the next pair (rank + 1)
    r = rank[pos_t]
    win = first[user[pos_t]] + r // max_len
    col = max_len - 1 - r % max_len
    inputs = np.zeros((int(first[-1]), max_len), np.int64)
    targets = np.zeros_like(inputs)
    targets[win, col] = history.items[pos_t] + 1
    inputs[win, col] = history.items[pos_t + 1] + 1
    return inputs, targets


def fit_sasrec(history: History, settings: SasrecConfig, seed: int, *, max_seconds: float,
               epochs: int | None = None, validate: Callable[[SasrecModel], float] | None = None) -> SasrecFit:
    """Train SASRec on ``history`` for ``epochs`` (or up to ``settings.max_epochs``, the best epoch count
    by ``validate``), within ``max_seconds`` of wall time.

    The first epoch is timed (with its validation); when fewer than ``settings.min_epochs`` (or the
    requested ``epochs``) fit into ``max_seconds`` the fit is skipped (``model`` ``None``, the report
    says why). With ``validate`` the model is scored every ``settings.eval_every`` epochs; training stops
    after ``settings.patience`` scores without improvement (or when time runs out) and the best weights
    are kept.

    Returns:
        the model and a report: ``trained``, ``epochs``, ``seconds``, ``epoch_seconds``, ``windows``,
        ``loss``, ``threads`` (of the training) and, with ``validate``, the validation trace ``ndcg@10`` per
        scored epoch and ``best``.
    """
    import torch

    t0 = time.perf_counter()
    inputs, targets = training_windows(history, settings.max_len, settings.max_windows)
    report: dict[str, Any] = {"windows": int(inputs.shape[0]), "max_seconds": round(max_seconds, 2)}
    if inputs.shape[0] == 0:
        return SasrecFit(None, {**report, "trained": False, "skipped": "no user with two or more items"})
    trained = _trained(inputs, targets, history.n_items)
    want = epochs if epochs is not None else settings.max_epochs
    need = epochs if epochs is not None else settings.min_epochs
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _build(settings, history.n_items)
    threads = settings.train_threads or _faster_threads(net, inputs, targets, history.n_items, settings)
    report["threads"] = threads
    with _threads(threads):
        opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
        best: tuple[float, int, dict[str, np.ndarray]] | None = None
        trace: list[tuple[int, float]] = []
        stale, done, loss = 0, 0, float("nan")
        while done < want:
            t_epoch = time.perf_counter()
            # the first epoch gives up as soon as it passes the limit (it is the estimate of the rest)
            result = _epoch(net, opt, inputs, targets, history.n_items, settings, rng,
                            deadline=t0 + max_seconds if done == 0 and epochs is None else None)
            epoch_s = time.perf_counter() - t_epoch
            if result is None:
                report.update(trained=False, seconds=round(time.perf_counter() - t0, 2),
                              skipped=f"out of budget: one epoch takes more than {max_seconds:.1f}s")
                log.info("SASRec skipped: %s", report["skipped"])
                return SasrecFit(None, report)
            loss = result
            done += 1
            stop = False
            if validate is not None and (done % settings.eval_every == 0 or done == want):
                score = validate(_snapshot(net, settings, history.n_items, done, trained))
                trace.append((done, round(score, 5)))
                if best is None or score > best[0] + 1e-9:
                    best, stale = (score, done, _state(net)), 0
                else:
                    stale += 1
                    stop = stale >= settings.patience
            epoch_s = time.perf_counter() - t_epoch  # with its validation
            if done == 1:
                report["epoch_seconds"] = round(epoch_s, 3)
                if epochs is None and epoch_s * need > max_seconds:
                    report.update(trained=False, seconds=round(time.perf_counter() - t0, 2),
                                  skipped=f"out of budget: {need} epochs x {epoch_s:.2f}s > {max_seconds:.1f}s")
                    log.info("SASRec skipped: %s", report["skipped"])
                    return SasrecFit(None, report)
            if stop:
                break
            elapsed = time.perf_counter() - t0
            if epochs is None and elapsed + epoch_s > max_seconds:
                report["stopped"] = "time"
                break
        if best is not None:
            state, done = best[2], best[1]
            report.update({"ndcg@10": trace, "best_ndcg@10": round(best[0], 5)})
        else:
            state = _state(net)
    report.update(trained=True, epochs=int(done), loss=round(loss, 4), seconds=round(time.perf_counter() - t0, 2))
    log.info("SASRec: %d epochs over %d windows in %.1fs (last loss %.3f)", done, inputs.shape[0],
             report["seconds"], loss)
    return SasrecFit(SasrecModel(settings, history.n_items, state, int(done), trained), report)


# ---------------------------------------------------------------------- internals
def _to_model_rows(rows: History, model_rows: np.ndarray) -> History:
    """``rows`` (catalogue rows) in the model's rows, items unknown to the model left out."""
    mapped = model_rows[rows.items] if rows.items.size else rows.items
    kept = filter_history(rows, mapped >= 0)
    n = int(model_rows.max()) + 1 if model_rows.size else 0
    return History(kept.n_users, n, kept.indptr, model_rows[kept.items], kept.rank, kept.weight)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads (0: the machine's cores), restoring the previous number after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n if n > 0 else (os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _state(net: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().astype(np.float32, copy=True) for k, v in net.state_dict().items()}


def _snapshot(net: Any, settings: SasrecConfig, n_items: int, epochs: int, trained: np.ndarray) -> SasrecModel:
    return SasrecModel(settings, n_items, _state(net), epochs, trained)


def _trim(seq: np.ndarray) -> np.ndarray:
    """``seq`` without the leading columns that are padding in every row (masked keys change nothing:
    the positions keep their embeddings, counted from the right; at least one column is kept)."""
    filled = np.flatnonzero((seq > 0).any(axis=0))
    return seq[:, filled[0]:] if filled.size else seq[:, -1:]


def _trained(inputs: np.ndarray, targets: np.ndarray, n_items: int) -> np.ndarray:
    """``(n_items,)`` bool: items that appear in the training windows."""
    seen = np.zeros(n_items + 1, bool)
    seen[inputs.ravel()] = True
    seen[targets.ravel()] = True
    return seen[1:]


def _epoch(net: Any, opt: Any, inputs: np.ndarray, targets: np.ndarray, n_items: int, settings: SasrecConfig,
           rng: np.random.Generator, deadline: float | None = None) -> float | None:
    """One pass over the windows in a seeded random order; returns the mean loss (``None``: stopped when
    ``deadline``, a ``time.perf_counter()`` value, passed)."""
    net.train()
    order = rng.permutation(inputs.shape[0])
    total, seen = 0.0, 0
    for lo in range(0, order.shape[0], settings.batch_size):
        if deadline is not None and time.perf_counter() > deadline:
            return None
        pick = order[lo : lo + settings.batch_size]
        loss, m = _batch_loss(net, inputs[pick], targets[pick], n_items, settings, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * m
        seen += m
    net.eval()
    return total / max(seen, 1)


def _batch_loss(net: Any, inputs: np.ndarray, targets: np.ndarray, n_items: int, settings: SasrecConfig,
                rng: np.random.Generator) -> tuple[Any, int]:
    """The next-item loss of some windows (full or sampled softmax) and the number of positions it covers."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(_trim(inputs))
    y = torch.from_numpy(targets[:, inputs.shape[1] - x.shape[1] :])
    valid = y > 0
    h = net(x)[valid]  # (m, dim) hidden states of the positions that have a next item
    t = y[valid] - 1  # their next items (model rows)
    emb = net.item.weight[1:]
    if n_items > settings.full_softmax_max_items:
        neg = torch.from_numpy(rng.integers(0, n_items, settings.negatives))
        pos_logit = (h * emb[t]).sum(-1, keepdim=True)
        neg_logit = h @ emb[neg].T
        neg_logit = neg_logit.masked_fill(neg[None, :] == t[:, None], float("-inf"))  # accidental hits
        return F.cross_entropy(torch.cat([pos_logit, neg_logit], dim=1), torch.zeros_like(t)), int(t.shape[0])
    return F.cross_entropy(h @ emb.T, t), int(t.shape[0])


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _faster_threads(net: Any, inputs: np.ndarray, targets: np.ndarray, n_items: int, settings: SasrecConfig,
                    steps: int = 2) -> int:
    """``train_threads`` 0: one thread or all usable cores, whichever runs a training step's forward and
    backward pass faster now (best of ``steps`` timed steps each, interleaved, after one untimed warm-up).
    On an idle machine all cores win; when other work holds the cores, one thread does (torch's threads
    then wait for each other). Nothing is learnt: the gradients are dropped and the random streams of
    the training are left as they were."""
    import torch

    cores = _usable_cores()
    if cores <= 1:
        return 1
    x, y = inputs[: settings.batch_size], targets[: settings.batch_size]
    probe_rng = np.random.default_rng(0)
    best = {1: math.inf, cores: math.inf}
    with torch.random.fork_rng(devices=[]):
        for i, n in enumerate([1] + [1, cores] * steps):
            with _threads(n):
                t0 = time.perf_counter()
                _batch_loss(net, x, y, n_items, settings, probe_rng)[0].backward()
                took = time.perf_counter() - t0
            net.zero_grad(set_to_none=True)
            if i > 0:
                best[n] = min(best[n], took)
    net.eval()
    return cores if best[cores] < best[1] else 1


def _build(settings: SasrecConfig, n_items: int) -> Any:
    """The network: embeddings, ``settings.blocks`` pre-norm causal self-attention blocks, a final norm."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = settings.dim
            self.norm1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, settings.heads, dropout=settings.dropout, batch_first=True)
            self.norm2 = nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(settings.dropout), nn.Linear(d, d))
            self.drop = nn.Dropout(settings.dropout)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            h = self.norm1(x)
            x = x + self.drop(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])
            return x + self.drop(self.ff(self.norm2(x)))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = settings.dim
            self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
            self.pos = nn.Embedding(settings.max_len, d)
            nn.init.normal_(self.item.weight, std=d ** -0.5)
            with torch.no_grad():
                self.item.weight[0].zero_()
            nn.init.normal_(self.pos.weight, std=d ** -0.5)
            self.drop = nn.Dropout(settings.dropout)
            self.blocks = nn.ModuleList([Block() for _ in range(settings.blocks)])
            self.norm = nn.LayerNorm(d)

        def forward(self, seq: torch.Tensor) -> torch.Tensor:
            """``(b, L)`` int64 left-padded embedding rows -> ``(b, L, dim)`` hidden states."""
            b, length = seq.shape
            x = self.item(seq) * math.sqrt(settings.dim) + self.pos.weight[-length:][None]
            x = self.drop(x)
            pad = seq == 0
            # causal, padding keys masked; a position always sees itself (no row fully masked)
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
            mask = causal[None] | pad[:, None, :]
            mask = mask & ~torch.eye(length, dtype=torch.bool)[None]
            mask = mask.repeat_interleave(settings.heads, dim=0)
            for block in self.blocks:
                x = block(x, mask)
            return self.norm(x)

    return Net()
