"""The served feed model: fitting the evaluated hybrid (``hybrid.py``; the item side in ``components.py``,
settings chosen on validation splits in ``selection.py``), training it from SQL and saving / loading it as an
artifact (``model.py``). It ranks through :class:`recsys.ranking.ranker.FeedRanker`."""
