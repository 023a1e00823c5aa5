"""Text and image encoders behind one contract: encode(batch) -> (n, dim) float32, L2-normalised."""
