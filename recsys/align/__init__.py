"""Contrastive alignment of text and image embeddings into one joint space."""
