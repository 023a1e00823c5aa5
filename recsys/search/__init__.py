"""Multimodal product search over the catalogue embeddings.

``ProductSearch.search(text=None, image=None, k=10, filters=SearchFilters(...))`` is the library-level
entry point (exact, numpy); :func:`recsys.search.loader.build_product_search` wires it from the
database, the active alignment and the encoders.
"""

from recsys.search.engine import Catalogue, Hit, ProductSearch, SearchFilters, top_k

__all__ = ["Catalogue", "Hit", "ProductSearch", "SearchFilters", "top_k"]
