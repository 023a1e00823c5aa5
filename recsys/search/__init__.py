"""Multimodal product search over the catalogue embeddings."""
