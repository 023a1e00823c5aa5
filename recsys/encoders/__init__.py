"""Text and image encoders behind one contract: encode(batch) -> (n, dim) float32, L2-normalised.

- :mod:`recsys.encoders.factory`: ``build_text_encoder(cfg)``, ``build_image_encoder(cfg)``, ``build_encoders(cfg)``.
- :mod:`recsys.encoders.base`: the ``Encoder`` and ``ImageEncoder`` protocols.
- :mod:`recsys.encoders.text`: transformers models with mean pooling (offline default all-MiniLM-L6-v2).
- :mod:`recsys.encoders.image`: EfficientNet-Lite0 (offline default) and torchvision backbones.
- :mod:`recsys.encoders.clip`: both CLIP towers (``clip:<model>``).
- :mod:`recsys.encoders.images`: ``load_image(source, max_pixels)`` with domain errors for bad images.
- :mod:`recsys.encoders.preprocess`: picklable image preprocessing for worker processes.
- :mod:`recsys.encoders.testing`: tiny random encoders and the contract test mixins.

Nothing heavy is imported here: ``recsys.config`` imports :mod:`recsys.encoders.settings`.
"""
