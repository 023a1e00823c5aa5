"""Per-user reranking of retrieved candidates: features, filters, diversity, reasons, paging."""
