"""Test helpers: tiny randomly initialised encoders and the contract every encoder must pass.

Used by this project's tests (and usable by downstream stages' tests): the tiny models are built from
configs in a few hundred milliseconds, with no download. Imports torch and transformers when called.

Contract mixin, in a test module::

    class TestMyEncoder(EncoderContract):
        @pytest.fixture
        def encoder(self): ...
        @pytest.fixture
        def inputs(self): ...   # >= 4 distinct inputs
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from recsys.encoders.base import Encoder, ImageEncoder
from recsys.encoders.image import TorchImageEncoder
from recsys.encoders.preprocess import ImagePreprocess
from recsys.encoders.text import TransformerTextEncoder, minilm_model_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def save_tiny_text_model(path: str | Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    src = minilm_model_dir()
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, path / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    return path


def tiny_text_encoder(path: str | Path, *, batch_size: int = 4, max_length: int = 32) -> TransformerTextEncoder:
    """Load (building it first if needed) the tiny text model at ``path``."""
    path = Path(path)
    if not (path / "config.json").is_file():
        save_tiny_text_model(path)
    return TransformerTextEncoder.from_pretrained(str(path), batch_size=batch_size, max_length=max_length)


def tiny_image_encoder(*, seed: int = 0, size: int = 32, batch_size: int = 4) -> TorchImageEncoder:
    """A randomly initialised one-block-per-stage torchvision ResNet (512-d features) on ``size`` px inputs."""
    import torch
    from torchvision.models.resnet import BasicBlock, ResNet

    from recsys.encoders.image import strip_classifier

    torch.manual_seed(seed)
    model = strip_classifier(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10))
    preprocess = ImagePreprocess(
        resize=size, crop=size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bilinear"
    )
    return TorchImageEncoder(model, preprocess, f"tiny-resnet-{seed}", batch_size=batch_size)


def save_tiny_clip_model(path: str | Path, seed: int = 0) -> Path:
    """A tiny random ``CLIPModel`` (32-px images, byte-level tokenizer without merges), saved to ``path``."""
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|startoftext|>", "<|endoftext|>"]
    alphabet = sorted(ByteLevel.alphabet())
    tokens = specials + alphabet + [c + "</w>" for c in alphabet]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokens),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def synthetic_images(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` distinct RGB images of assorted sizes (gradients and blocks of colour)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(24, 80)), int(rng.integers(24, 80))
        base = rng.integers(0, 256, size=(1, 1, 3))
        grad = np.linspace(0, 255, w)[None, :, None] * rng.random((1, 1, 3))
        arr = (base + grad + rng.integers(0, 40, size=(h, w, 3))) % 256
        out.append(Image.fromarray(arr.astype(np.uint8), "RGB"))
    return out


class EncoderContract:
    """Tests every :class:`~recsys.encoders.base.Encoder` must pass. Needs fixtures ``encoder`` and ``inputs``."""

    atol = 1e-4

    def test_is_an_encoder(self, encoder: Any) -> None:
        assert isinstance(encoder, Encoder)
        assert isinstance(encoder.dim, int) and encoder.dim > 0
        assert encoder.version.startswith(encoder.name + "@") or encoder.version.startswith(encoder.name + "+")
        assert len(encoder.version) > len(encoder.name) + 8

    def test_shape_dtype_norm(self, encoder: Any, inputs: list[Any]) -> None:
        out = encoder.encode(inputs)
        assert isinstance(out, np.ndarray)
        assert out.shape == (len(inputs), encoder.dim)
        assert out.dtype == np.float32
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)

    def test_distinct_inputs_distinct_vectors(self, encoder: Any, inputs: list[Any]) -> None:
        out = encoder.encode(inputs)
        assert np.abs(out - out[0]).max(axis=1)[1:].min() > 1e-4

    def test_deterministic(self, encoder: Any, inputs: list[Any]) -> None:
        np.testing.assert_array_equal(encoder.encode(inputs), encoder.encode(inputs))

    def test_batch_size_independent(self, encoder: Any, inputs: list[Any]) -> None:
        together = encoder.encode(inputs)
        one_by_one = np.concatenate([encoder.encode([x]) for x in inputs])
        reversed_ = encoder.encode(inputs[::-1])[::-1]
        np.testing.assert_allclose(one_by_one, together, atol=self.atol)
        np.testing.assert_allclose(reversed_, together, atol=self.atol)

    def test_empty_batch(self, encoder: Any) -> None:
        out = encoder.encode([])
        assert out.shape == (0, encoder.dim) and out.dtype == np.float32


class ImageEncoderContract(EncoderContract):
    """Extra tests for :class:`~recsys.encoders.base.ImageEncoder`: worker-side preprocessing."""

    def test_is_an_image_encoder(self, encoder: Any) -> None:
        assert isinstance(encoder, ImageEncoder)

    def test_preprocess_picklable(self, encoder: Any, inputs: list[Image.Image]) -> None:
        clone = pickle.loads(pickle.dumps(encoder.preprocess))
        a, b = encoder.preprocess(inputs[0]), clone(inputs[0])
        assert a.dtype == np.float32 and a.ndim == 3 and a.shape[0] == 3
        np.testing.assert_array_equal(a, b)

    def test_encode_tensors_matches_encode(self, encoder: Any, inputs: list[Image.Image]) -> None:
        batch = np.stack([encoder.preprocess(im) for im in inputs])
        np.testing.assert_allclose(encoder.encode_tensors(batch), encoder.encode(inputs), atol=1e-6)
