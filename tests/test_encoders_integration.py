"""The offline default encoders on real H&M photos and texts from ../shared/data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recsys.encoders.base import Encoder, ImageEncoder
from recsys.encoders.factory import build_image_encoder, build_text_encoder
from recsys.encoders.images import load_image
from recsys.encoders.settings import ImageEncoderConfig, TextEncoderConfig
from recsys.encoders.testing import EncoderContract, ImageEncoderContract

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

# Product type -> ImageNet classes that are a right answer for a photo of it.
PLAUSIBLE = {
    "Bra": {"brassiere"},
    "Sweater": {"sweatshirt", "cardigan", "jersey", "wool"},
    "Sunglasses": {"sunglass", "sunglasses"},
    "Trousers": {"jean", "suit", "pajama", "swimming trunks"},
    "Swimsuit": {"maillot", "maillot tank suit", "bikini"},
}


@pytest.fixture(scope="module")
def hm(shared_data: Path) -> Path:
    folder = shared_data / "hm-fashion-sample"
    if not (folder / "items.csv").is_file():
        pytest.skip(f"H&M sample not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def hm_items(hm: Path) -> list[dict[str, str]]:
    """Rows of items.csv, with ``image`` made an absolute path."""
    with open(hm / "items.csv", newline="", encoding="utf-8") as f:
        return [{**r, "image": str(hm / r["image"])} for r in csv.DictReader(f)]


def _by_type(items: list[dict[str, str]], kind: str, n: int) -> list[dict[str, str]]:
    return [r for r in items if r["product_type_name"] == kind][:n]


@pytest.fixture(scope="module")
def image_encoder() -> ImageEncoder:
    return build_image_encoder(ImageEncoderConfig())


@pytest.fixture(scope="module")
def text_encoder() -> Encoder:
    return build_text_encoder(TextEncoderConfig())


def test_efficientnet_lite0_imagenet_predictions_are_plausible(
    image_encoder: ImageEncoder, hm_items: list[dict[str, str]]
) -> None:
    """The weights loaded right: ImageNet top-5 of real product photos contains a right class."""
    import torch
    import torchvision.models as tvm

    categories = tvm.ResNet50_Weights.DEFAULT.meta["categories"]  # the 1,000 ImageNet class names
    classifier = image_encoder.module.net  # type: ignore[attr-defined]
    for kind, ok in PLAUSIBLE.items():
        rows = _by_type(hm_items, kind, 6)
        batch = np.stack([image_encoder.preprocess(load_image(r["image"], 10**7)) for r in rows])
        with torch.inference_mode():
            top5 = classifier(torch.from_numpy(batch)).topk(5).indices.tolist()
        hits = [any(categories[i] in ok for i in row) for row in top5]
        assert sum(hits) >= 5, (kind, [[categories[i] for i in row] for row in top5])


def test_image_vectors_group_product_types(image_encoder: ImageEncoder, hm_items: list[dict[str, str]]) -> None:
    """Nearest neighbours by image share the product type far more often than chance."""
    kinds = ["Bra", "Trousers", "Sunglasses", "Socks", "Dress"]
    rows = [r for k in kinds for r in _by_type(hm_items, k, 8)]
    vecs = image_encoder.encode([load_image(r["image"], 10**7) for r in rows])
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1)
    nn = sims.argmax(1)
    same = np.mean([rows[i]["product_type_name"] == rows[j]["product_type_name"] for i, j in enumerate(nn)])
    assert same >= 0.7  # chance: 7/39 = 0.18


def test_minilm_matches_sentence_transformers(text_encoder: Encoder, hm_items: list[dict[str, str]]) -> None:
    """Oracle: the sentence-transformers reference pipeline on the same model folder."""
    SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer

    from recsys.encoders.text import minilm_model_dir

    texts = [r["prod_name"] + ". " + r["detail_desc"] for r in hm_items[:24]]
    ref = SentenceTransformer(str(minilm_model_dir()), device="cpu")
    ref.max_seq_length = 128
    expected = ref.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(text_encoder.encode(texts), expected, atol=2e-5)


def test_text_query_finds_the_right_products(text_encoder: Encoder, hm_items: list[dict[str, str]]) -> None:
    rows = hm_items[:250]
    docs = text_encoder.encode([f"{r['prod_name']}. {r['detail_desc']}" for r in rows])
    for query, kind in [("black stockings", {"Underwear Tights", "Leggings/Tights", "Socks"}), ("padded bra", {"Bra"})]:
        top = np.argsort(-(docs @ text_encoder.encode([query])[0]))[:5]
        assert sum(rows[i]["product_type_name"] in kind for i in top) >= 4, [rows[i]["prod_name"] for i in top]


class TestOfflineImageDefaultContract(ImageEncoderContract):
    @pytest.fixture
    def encoder(self, image_encoder: ImageEncoder) -> ImageEncoder:
        return image_encoder

    @pytest.fixture
    def inputs(self, hm_items: list[dict[str, str]]) -> list[Image.Image]:
        return [load_image(r["image"], 10**7) for r in hm_items[:5]]


class TestOfflineTextDefaultContract(EncoderContract):
    @pytest.fixture
    def encoder(self, text_encoder: Encoder) -> Encoder:
        return text_encoder

    @pytest.fixture
    def inputs(self, hm_items: list[dict[str, str]]) -> list[str]:
        return [r["detail_desc"] for r in hm_items[:6]]
