"""Per-user scoring and ranking, shared by the home feed, ``recsys export`` and the evaluation.

Pure functions of arrays (the item side comes from :mod:`recsys.cf` and :mod:`recsys.recommend`):

- ``scoring.py``: standardisation, content profiles and kernels, the blend of standardised components;
- ``hybrid.py``: the hybrid's settings, its fitted item side and the per-user components and score;
- ``ranker.py``: :class:`~recsys.ranking.ranker.FeedRanker`, a fitted feed model laid over the serving
  catalogue (exact, linear and candidate regimes), seen masks and the ranked rows with their components;
- ``topk.py``: top-k in the evaluation's tie order; ``metrics.py``: NDCG, recall, coverage;
- ``diversity.py`` (MMR, per-category caps), ``reasons.py`` (why an item was recommended),
  ``cursor.py`` (signed paging cursors), ``rerank.py`` (the fallback feed without a trained model).
"""
