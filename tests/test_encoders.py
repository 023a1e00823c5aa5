"""Unit tests of the encoders with tiny randomly initialised models (no download, no shared data)."""

from __future__ import annotations

import http.server
import pickle
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recsys.encoders import errors as E
from recsys.encoders.base import Encoder, ImageEncoder
from recsys.encoders.errors import EncoderError, ImageLoadError
from recsys.encoders.factory import build_encoders, build_image_encoder, build_text_encoder
from recsys.encoders.images import load_image
from recsys.encoders.preprocess import ImagePreprocess
from recsys.encoders.settings import EncodersConfig, ImageEncoderConfig, TextEncoderConfig
from recsys.encoders.testing import (
    EncoderContract,
    ImageEncoderContract,
    save_tiny_clip_model,
    save_tiny_text_model,
    synthetic_images,
    tiny_image_encoder,
    tiny_text_encoder,
)

TEXTS = [
    "Black 20 den stockings with a reinforced top",
    "Soft cotton sweater in light grey",
    "Padded push-up bra",
    "",
    "Wide trousers in woven fabric with a high waist and side pockets, long and flowing " * 3,
    "Sunglasses",
]


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip_model(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    return synthetic_images(5)


# -- the contract, for every encoder -------------------------------------------------------------


class TestTextEncoderContract(EncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self, tiny_text_dir: Path) -> Encoder:
        return build_text_encoder(TextEncoderConfig(name=str(tiny_text_dir), batch_size=2, max_length=32))

    @pytest.fixture
    def inputs(self) -> list[str]:
        return TEXTS


class TestQuantizedTextEncoderContract(EncoderContract):
    # Dynamic quantization scales activations per batch, so a vector depends slightly (~1e-4) on its batch.
    atol = 1e-3

    @pytest.fixture(scope="class")
    def encoder(self, tiny_text_dir: Path) -> Encoder:
        cfg = TextEncoderConfig(name=str(tiny_text_dir), batch_size=2, max_length=32, quantize=True)
        return build_text_encoder(cfg)

    @pytest.fixture
    def inputs(self) -> list[str]:
        return TEXTS


class TestImageEncoderContract(ImageEncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self) -> ImageEncoder:
        return tiny_image_encoder(batch_size=2)

    @pytest.fixture
    def inputs(self, images: list[Image.Image]) -> list[Image.Image]:
        return images


class TestEfficientNetLiteArchitectureContract(ImageEncoderContract):
    """The offline default's architecture, randomly initialised, on small inputs."""

    @pytest.fixture(scope="class")
    def encoder(self) -> ImageEncoder:
        from recsys.encoders.efficientnet_lite import EfficientNetLite, FeaturesOnly
        from recsys.encoders.image import TorchImageEncoder, efficientnet_lite_preprocess

        torch.manual_seed(0)
        net = EfficientNetLite()
        return TorchImageEncoder(FeaturesOnly(net), efficientnet_lite_preprocess(48), "lite-random", batch_size=3)

    @pytest.fixture
    def inputs(self, images: list[Image.Image]) -> list[Image.Image]:
        return images


class TestClipTextContract(EncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self, tiny_clip_dir: Path) -> Encoder:
        return build_text_encoder(TextEncoderConfig(name=f"clip:{tiny_clip_dir}", batch_size=2))

    @pytest.fixture
    def inputs(self) -> list[str]:
        return TEXTS


class TestClipImageContract(ImageEncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self, tiny_clip_dir: Path) -> ImageEncoder:
        return build_image_encoder(ImageEncoderConfig(name=f"clip:{tiny_clip_dir}", batch_size=2))

    @pytest.fixture
    def inputs(self, images: list[Image.Image]) -> list[Image.Image]:
        return images


# -- text encoder --------------------------------------------------------------------------------


def test_text_mean_pooling_ignores_padding(tiny_text_dir: Path) -> None:
    """The vector is the mean of the real tokens' hidden states, whatever the padding."""
    enc = tiny_text_encoder(tiny_text_dir, batch_size=8)
    text = "Soft cotton sweater"
    ids = enc.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(**ids).last_hidden_state[0]  # (seq, dim), no padding at all
    expected = hidden.mean(0)
    expected = (expected / expected.norm()).numpy()
    padded = enc.encode([text, TEXTS[4]])[0]  # padded to the long text's length
    np.testing.assert_allclose(padded, expected, atol=1e-5)


def test_text_version_tracks_weights(tiny_text_dir: Path, tmp_path: Path) -> None:
    a = tiny_text_encoder(tiny_text_dir)
    b = tiny_text_encoder(tiny_text_dir)
    other = tiny_text_encoder(save_tiny_text_model(tmp_path / "other", seed=1))
    assert a.version == b.version
    assert a.version.startswith(f"{tiny_text_dir}@")
    assert other.version != a.version
    longer = tiny_text_encoder(tiny_text_dir, max_length=64)
    assert longer.version != a.version  # a preprocessing change is a different encoder too


def test_quantized_text_encoder_is_close_to_fp32(tiny_text_dir: Path) -> None:
    fp32 = build_text_encoder(TextEncoderConfig(name=str(tiny_text_dir)))
    int8 = build_text_encoder(TextEncoderConfig(name=str(tiny_text_dir), quantize=True))
    assert int8.version == fp32.version.replace("@", "+int8@")
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())  # type: ignore[attr-defined]
    cos = np.sum(fp32.encode(TEXTS) * int8.encode(TEXTS), axis=1)
    assert cos.min() > 0.9


def test_quantize_refused_off_cpu(tiny_text_dir: Path) -> None:
    with pytest.raises(EncoderError, match="CPU only"):
        build_text_encoder(TextEncoderConfig(name=str(tiny_text_dir), quantize=True), device="meta")


def test_unknown_text_model_is_a_domain_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="cannot load text encoder"):
        build_text_encoder(TextEncoderConfig(name=str(tmp_path / "nope")))


def test_offline_default_text_name_resolves_to_package_dir() -> None:
    from recsys.encoders.text import MINILM_NAME, resolve_text_model

    path = Path(resolve_text_model(MINILM_NAME))
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert resolve_text_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"


# -- image encoders ------------------------------------------------------------------------------


def test_efficientnet_lite0_checkpoint_loads_strictly() -> None:
    from recsys.encoders.image import efficientnet_lite0_weights_path, load_efficientnet_lite0

    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = load_efficientnet_lite0()
    assert set(model.state_dict()) == set(state)
    assert torch.equal(model._conv_stem.weight, state["_conv_stem.weight"])
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)


def test_offline_default_image_encoder_from_factory(images: list[Image.Image]) -> None:
    enc = build_image_encoder(ImageEncoderConfig())
    assert enc.name == "efficientnet-lite0" and enc.dim == 1280
    assert enc.preprocess.shape == (3, 224, 224)  # type: ignore[attr-defined]
    out = enc.encode(images[:2])
    assert out.shape == (2, 1280)
    assert np.all(out >= 0)  # features after ReLU6 and average pooling
    assert build_image_encoder(ImageEncoderConfig(image_size=160)).version != enc.version


@pytest.mark.parametrize("size,stride,kernel", [(224, 2, 3), (57, 2, 5), (33, 1, 3), (7, 2, 3)])
def test_tf_same_padding_output_size(size: int, stride: int, kernel: int) -> None:
    from recsys.encoders.efficientnet_lite import Conv2dSame

    conv = Conv2dSame(3, 4, kernel, stride=stride)
    out = conv(torch.zeros(1, 3, size, size))
    assert out.shape[-1] == -(-size // stride)


def test_strip_classifier_gives_penultimate_features() -> None:
    import torchvision.models as tvm

    from recsys.encoders.image import strip_classifier

    model = strip_classifier(tvm.mobilenet_v3_small(weights=None, num_classes=10)).eval()
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1024)
    with pytest.raises(EncoderError, match="classifier"):
        strip_classifier(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))


def test_unknown_image_model_is_a_domain_error() -> None:
    with pytest.raises(EncoderError, match="unknown torchvision model 'resnet-9000'"):
        build_image_encoder(ImageEncoderConfig(name="resnet-9000"))


def test_encode_tensors_rejects_wrong_shape() -> None:
    enc = tiny_image_encoder()
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        enc.encode_tensors(np.zeros((2, 32, 32), dtype=np.float32))


def test_build_encoders_shares_one_clip_model(tiny_clip_dir: Path, images: list[Image.Image]) -> None:
    name = f"clip:{tiny_clip_dir}"
    text, image = build_encoders(EncodersConfig(text=TextEncoderConfig(name=name), image=ImageEncoderConfig(name=name)))
    assert text.dim == image.dim == 16
    assert text.tower["text_projection"] is not None  # type: ignore[attr-defined]
    assert image.module.vision_model is not None  # type: ignore[attr-defined]
    assert text.encode(["a"]).shape == image.encode(images[:1]).shape == (1, 16)
    with pytest.raises(EncoderError, match="clip:<model"):
        build_image_encoder(ImageEncoderConfig(name="clip:"))


# -- preprocessing -------------------------------------------------------------------------------


def test_preprocess_resizes_crops_and_normalises() -> None:
    pre = ImagePreprocess(resize=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = pre(Image.new("RGB", (100, 60), (255, 0, 128)))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 5, 5], [(1 - 0.5) / 0.25, (0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25], atol=1e-5)
    assert pickle.loads(pickle.dumps(pre)) == pre
    with pytest.raises(ValueError, match="interpolation"):
        ImagePreprocess(40, 32, (0, 0, 0), (1, 1, 1), interpolation="magic")


def test_preprocess_centre_crop_keeps_the_middle() -> None:
    arr = np.zeros((64, 32, 3), dtype=np.uint8)
    arr[16:48] = 255  # white middle band of a tall image
    pre = ImagePreprocess(resize=32, crop=32, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest")
    out = pre(Image.fromarray(arr))
    assert out.min() == pytest.approx(1.0)


# -- image loading -------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` x ``height`` and holds no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _jpeg(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    synthetic_images(1)[0].resize(size).save(path, "JPEG", quality=90)
    return path


def test_load_image_ok_and_rgb(tmp_path: Path) -> None:
    img = load_image(_jpeg(tmp_path / "a.jpg"), max_pixels=10_000)
    assert img.mode == "RGB" and img.size == (64, 48)
    grey = tmp_path / "g.png"
    Image.new("L", (10, 10), 7).save(grey)
    assert load_image(str(grey), 1000).getpixel((0, 0)) == (7, 7, 7)


def test_load_image_transparent_background_becomes_white(tmp_path: Path) -> None:
    p = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(p)
    assert load_image(p, 100).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda d: d / "missing.jpg", E.MISSING),
        (lambda d: d, E.UNREADABLE),  # a folder
        (lambda d: (d / "x.jpg").write_text("this is not an image") and d / "x.jpg", E.NOT_AN_IMAGE),
        (lambda d: (d / "empty.jpg").write_bytes(b"") or d / "empty.jpg", E.NOT_AN_IMAGE),
    ],
    ids=["missing", "folder", "text", "empty"],
)
def test_load_image_errors(tmp_path: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageLoadError) as info:
        load_image(make(tmp_path), max_pixels=10_000)
    assert info.value.reason == reason
    assert str(tmp_path) in str(info.value)


def test_load_image_truncated(tmp_path: Path) -> None:
    good = _jpeg(tmp_path / "good.jpg", (200, 150)).read_bytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageLoadError) as info:
        load_image(bad, max_pixels=10**6)
    assert info.value.reason == E.TRUNCATED and "truncated" in info.value.detail


def test_load_image_too_many_pixels(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(_jpeg(tmp_path / "a.jpg"), max_pixels=64 * 48 - 1)
    assert info.value.reason == E.TOO_LARGE and "3,072 pixels" in info.value.detail


@pytest.mark.parametrize("side", [12_000, 60_000])  # above PIL's own warning (89 Mpx) / error (179 Mpx) limits
def test_load_image_bomb_is_refused_from_its_header(tmp_path: Path, side: int) -> None:
    """A header announcing a huge image is refused before decoding (the file has no pixel data)."""
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(side, side))
    with pytest.raises(ImageLoadError) as info:
        load_image(p, max_pixels=40_000_000)
    assert info.value.reason == E.TOO_LARGE


def test_image_load_error_pickles_and_validates_reason() -> None:
    err = pickle.loads(pickle.dumps(ImageLoadError(E.MISSING, "/x.jpg", "no such file")))
    assert (err.reason, err.source, str(err)) == (E.MISSING, "/x.jpg", "missing: /x.jpg: no such file")
    with pytest.raises(ValueError, match="reason must be one of"):
        ImageLoadError("bad", "x", "y")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    _jpeg(tmp_path / "ok.jpg")
    (tmp_path / "big.jpg").write_bytes(b"\xff" * 5000)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_load_image_from_url(http_server: str) -> None:
    from recsys.encoders.access import ImagePolicy

    policy = ImagePolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_s=2, max_bytes=3000)  # a local test server
    assert load_image(f"{http_server}/ok.jpg", max_pixels=10_000, policy=policy).size == (64, 48)
    for url, detail in [
        (f"{http_server}/nope.jpg", "HTTP status 404"),
        (f"{http_server}/big.jpg", "limit of 3000"),
        ("http://127.0.0.1:9/x.jpg", "ConnectionError"),
    ]:
        with pytest.raises(ImageLoadError) as info:
            load_image(url, max_pixels=10_000, policy=policy)
        assert info.value.reason == E.FETCH_FAILED and detail in info.value.detail, info.value.detail
    with pytest.raises(ImageLoadError) as info:  # without the allowlist: loopback is refused, nothing fetched
        load_image(f"{http_server}/ok.jpg", max_pixels=10_000)
    assert info.value.reason == E.REFUSED


def test_efficientnet_lite_batchnorm_folding_keeps_outputs() -> None:
    from recsys.encoders.efficientnet_lite import EfficientNetLite

    torch.manual_seed(0)
    net = EfficientNetLite().eval()
    for m in net.modules():  # non-trivial statistics, so that folding has something to get wrong
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 40, 40)
    with torch.inference_mode():
        before = net(x)
        after = net.fold_batchnorm()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_int8_scheme_keeps_ffn_down_projections_in_fp32(tiny_text_dir: Path) -> None:
    from torch import nn

    from recsys.encoders.text import quantize_dynamic_int8

    enc = tiny_text_encoder(tiny_text_dir)
    q = quantize_dynamic_int8(enc.model)
    fp32 = {n: type(m) is nn.Linear for n, m in q.named_modules() if "dense" in n or "query" in n}
    assert fp32["encoder.layer.0.output.dense"]
    assert not fp32["encoder.layer.0.intermediate.dense"]
    assert not fp32["encoder.layer.0.attention.output.dense"]
    assert not fp32["encoder.layer.1.attention.self.query"]
    all_int8 = quantize_dynamic_int8(tiny_text_encoder(tiny_text_dir).model, keep_fp32=None)
    assert not any(type(m) is nn.Linear for n, m in all_int8.named_modules() if n.startswith("encoder."))


def test_torchvision_backbone_uses_its_weights_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The online path without the download: the weights enum's transforms become the preprocessing."""
    import torchvision.models as tvm

    built: dict[str, object] = {}

    def fake_get_model(name: str, weights: object = None) -> torch.nn.Module:
        built["weights"] = weights
        return tvm.resnet18(weights=None)  # same architecture, random weights, nothing downloaded

    monkeypatch.setattr(tvm, "get_model", fake_get_model)
    enc = build_image_encoder(ImageEncoderConfig(name="resnet18"))
    assert built["weights"] is tvm.ResNet18_Weights.DEFAULT
    assert enc.dim == 512
    pre = enc.preprocess
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bilinear")  # type: ignore[attr-defined]
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))  # type: ignore[attr-defined]
    assert enc.encode(synthetic_images(2)).shape == (2, 512)
