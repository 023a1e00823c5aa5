"""Lexical (BM25) retrieval over the items' text, a versioned artifact with a side buffer.

The index is `bm25s <https://github.com/xhluK/bm25s>`_ (Lucene's BM25 as a sparse token x document matrix
of precomputed scores: a query sums a few columns into one ``(n,)`` score vector, which the hybrid ranker
fuses with the dense cosines over the same rows; saved as ``.npy`` files that load memory-mapped, so serving
processes share one copy). bm25s cannot add documents, so items put through the API go to a **side
buffer** scored at query time with the same formula and the base index's statistics (document frequencies,
average length): a new item is found by its words at once, and a changed one by its new words only.

Directory of a saved index (published like the vector indexes, :mod:`recsys.index.publish`)::

    manifest.json     format, backend "bm25s", n, n_base, params, info (written last)
    bm25/             bm25s' own files (score matrix, vocabulary)
    words.json        unstemmed word -> document frequency (the spelling dictionary)
    stats.json        avgdl of the base documents
    buffer.json       side buffer: row -> token list (only when rows were buffered)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ArtifactError
from recsys.index.manifest import FORMAT, MANIFEST, read_manifest
from recsys.search.text import stem_all, words

log = logging.getLogger(__name__)

BACKEND = "bm25s"


class LexicalIndex:
    """BM25 scores of a query over ``n`` rows (rows = the search catalogue's rows).

    Args:
        bm25: a built or loaded ``bm25s.BM25`` over the first ``n_base`` rows.
        n_base: rows in ``bm25``.
        avgdl: average document length (tokens) of those rows.
        word_counts: unstemmed word -> number of documents holding it (spelling dictionary).
        buffer: rows added or replaced since the build -> their tokens.
        n: total rows (``n_base`` plus appended rows).
    """

    backend = BACKEND

    def __init__(self, bm25: Any, n_base: int, avgdl: float, word_counts: dict[str, int],
                 buffer: dict[int, list[str]] | None = None, n: int | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.bm25 = bm25
        self.n_base = n_base
        self.avgdl = avgdl
        self.word_counts = word_counts
        self.buffer = dict(buffer or {})
        self.n = n_base if n is None else n
        self.info: dict[str, Any] = dict(info or {})
        indptr = np.asarray(bm25.scores["indptr"])
        self._df = np.diff(indptr).astype(np.float64)  # (vocab,) documents per token
        self._vocab: dict[str, int] = bm25.vocab_dict
        self._replaced = np.asarray(sorted(r for r in self.buffer if r < n_base), dtype=np.int64)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, documents: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> LexicalIndex:
        """Index ``documents`` (row ``i`` = document ``i``)."""
        bm25s = _bm25s()

        t0 = time.perf_counter()
        tokens = []
        counts: Counter[str] = Counter()
        for d in documents:
            w = words(d)
            counts.update(set(w))
            tokens.append(stem_all(w))
        bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        bm25.index(tokens, show_progress=False)
        avgdl = float(np.mean([len(t) for t in tokens])) if tokens else 1.0
        info = {"params": {"k1": k1, "b": b, "method": "lucene"}, "vocab": len(bm25.vocab_dict),
                "build_seconds": round(time.perf_counter() - t0, 3)}
        return cls(bm25, len(documents), max(avgdl, 1e-6), dict(counts), info=info)

    @property
    def size(self) -> int:
        return self.n

    @property
    def buffer_size(self) -> int:
        return len(self.buffer)

    # ------------------------------------------------------------------ query
    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """``(n,)`` float32 BM25 scores of the stemmed query ``tokens`` (0 where nothing matches)."""
        known = [t for t in dict.fromkeys(tokens) if t in self._vocab]
        if known and not self.buffer and self.n == self.n_base:  # bm25s' own fresh array (no second copy)
            return np.asarray(self.bm25.get_scores(known), dtype=np.float32)
        out = np.zeros(self.n, dtype=np.float32)
        if known:
            out[: self.n_base] = self.bm25.get_scores(known)
        if self.buffer:
            if len(self._replaced):
                out[self._replaced] = 0.0
            for row, doc in self.buffer.items():
                out[row] = self._score_doc(tokens, doc)
        return out

    def _idf(self, token: str) -> float:
        df = self._df[self._vocab[token]] if token in self._vocab else 0.0
        return float(np.log(1.0 + (self.n_base - df + 0.5) / (df + 0.5)))

    def _score_doc(self, tokens: Sequence[str], doc: list[str]) -> float:
        """Lucene BM25 of one buffered document with the base index's statistics (as bm25s scores)."""
        p = self.info.get("params", {})
        k1, b = float(p.get("k1", 1.2)), float(p.get("b", 0.75))
        tf = Counter(doc)
        norm = k1 * (1 - b + b * len(doc) / self.avgdl)
        return float(sum(self._idf(t) * tf[t] / (tf[t] + norm) for t in dict.fromkeys(tokens) if tf[t]))

    # ------------------------------------------------------------------ updates
    def with_documents(self, rows: np.ndarray, documents: Sequence[str], n: int) -> LexicalIndex:
        """A copy with ``documents`` at ``rows`` (replacing or appending; the catalogue now has ``n`` rows),
        through the side buffer; the base matrix is shared."""
        buffer = dict(self.buffer)
        for r, d in zip(np.asarray(rows).tolist(), documents):
            buffer[int(r)] = stem_all(words(d))
        return LexicalIndex(self.bm25, self.n_base, self.avgdl, self.word_counts, buffer, max(n, self.n), self.info)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        """Write the index into ``directory`` (created); ``manifest.json`` last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(directory / "bm25"), show_progress=False)
        (directory / "words.json").write_text(json.dumps(self.word_counts), encoding="utf-8")
        (directory / "stats.json").write_text(json.dumps({"avgdl": self.avgdl}), encoding="utf-8")
        if self.buffer:
            (directory / "buffer.json").write_text(json.dumps({str(k): v for k, v in self.buffer.items()}),
                                                   encoding="utf-8")
        manifest = {
            "format": FORMAT, "backend": BACKEND, "n": self.n, "n_base": self.n_base, "n_buffered": len(self.buffer),
            "dim": 0, "params": self.info.get("params", {}), "build_seconds": self.info.get("build_seconds"),
            "created": self.info.get("created") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "version": self.info.get("version"), "info": self.info,
        }
        tmp = directory / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / MANIFEST)

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> LexicalIndex:
        """Load a saved index (the score matrix memory-mapped when ``mmap``).

        Raises:
            ArtifactError: incomplete, or not a lexical index.
        """
        bm25s = _bm25s()

        directory = Path(directory)
        manifest = read_manifest(directory, expect_backend=BACKEND)
        try:
            bm25 = bm25s.BM25.load(str(directory / "bm25"), mmap=mmap, show_progress=False)
            counts = json.loads((directory / "words.json").read_text(encoding="utf-8"))
            avgdl = float(json.loads((directory / "stats.json").read_text(encoding="utf-8"))["avgdl"])
            buf_path = directory / "buffer.json"
            buffer = {int(k): v for k, v in json.loads(buf_path.read_text(encoding="utf-8")).items()} \
                if buf_path.is_file() else {}
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{directory}: unreadable lexical index ({exc})") from exc
        info = dict(manifest.get("info") or {})
        info["version"] = manifest.get("version")
        return cls(bm25, int(manifest["n_base"]), avgdl, counts, buffer, int(manifest["n"]), info)


def _bm25s() -> Any:
    """``bm25s``, its logger put back under the application's logging level (the package sets its own
    logger to DEBUG at import, which printed "Building index from tokens" under any CLI verbosity)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s
