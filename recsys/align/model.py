"""A trained alignment: projection heads (numpy inference), save/load with a manifest.

Training lives in :mod:`recsys.align.train` (torch); inference here needs numpy only, so that serving
and search can project queries without importing torch.

Head kinds (``x`` is the standardised input, ``g`` the tanh approximation of GELU):

- ``linear``: ``y = x W + b``
- ``mlp``: ``y = x W + b + g(x W1 + b1) W2 + b2`` (a linear skip plus a one-hidden-layer MLP)

Each head's output is L2-normalised. An ensemble of ``m`` heads concatenates the members' unit outputs
scaled by ``1/sqrt(m)``, so a dot product in the joint space is the mean of the members' cosines.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ArtifactError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
FORMAT_VERSION = 1
HEAD_PARAMS: dict[str, tuple[str, ...]] = {"linear": ("W", "b"), "mlp": ("W", "b", "W1", "b1", "W2", "b2")}


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (matches ``torch.nn.functional.gelu(..., approximate="tanh")``)."""
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x**3)))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero. ``(n, d)`` float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


@dataclass(frozen=True)
class Head:
    """One side's projection: input standardisation then a linear or MLP map.

    Attributes:
        kind: ``linear`` or ``mlp``.
        mean: ``(in_dim,)`` float32 subtracted from the input.
        scale: ``(in_dim,)`` float32 the centred input is divided by.
        params: weight arrays named as in :data:`HEAD_PARAMS` (``W``: ``(in_dim, dim)``).
    """

    kind: str
    mean: np.ndarray
    scale: np.ndarray
    params: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        if self.kind not in HEAD_PARAMS:
            raise ArtifactError(f"head kind must be one of {sorted(HEAD_PARAMS)}, got {self.kind!r}")
        missing = [p for p in HEAD_PARAMS[self.kind] if p not in self.params]
        if missing:
            raise ArtifactError(f"{self.kind} head is missing parameter(s) {missing}")

    @property
    def in_dim(self) -> int:
        return int(self.params["W"].shape[0])

    @property
    def dim(self) -> int:
        return int(self.params["W"].shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(n, in_dim)`` → ``(n, dim)`` float32, L2-normalised."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected input of shape (n, {self.in_dim}), got {x.shape}")
        p = self.params
        z = (x - self.mean) / self.scale
        y = z @ p["W"] + p["b"]
        if self.kind == "mlp":
            y = y + gelu_tanh(z @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return l2_normalize(y)


@dataclass(frozen=True)
class AlignmentModel:
    """Text and image projection heads into one joint space (an ensemble of ``len(text_heads)`` members).

    Attributes:
        text_heads / image_heads: one head per ensemble member and side.
        logit_scales: the learnt ``1/temperature`` of each member (kept for reference).
        text_encoder / image_encoder: versions of the encoders whose vectors the heads expect.
        config: the :class:`~recsys.align.settings.AlignConfig` it was trained with, as a dict.
        metrics: training report (validation metrics, epochs, timings).
    """

    text_heads: tuple[Head, ...]
    image_heads: tuple[Head, ...]
    logit_scales: tuple[float, ...]
    text_encoder: str = ""
    image_encoder: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.text_heads or len(self.text_heads) != len(self.image_heads):
            raise ArtifactError("an alignment needs the same (non-zero) number of text and image heads")
        dims = {h.dim for h in (*self.text_heads, *self.image_heads)}
        if len(dims) != 1:
            raise ArtifactError(f"all heads must share one output dimension, got {sorted(dims)}")

    @property
    def dim(self) -> int:
        """Dimension of the joint space (member dim × ensemble size)."""
        return self.text_heads[0].dim * len(self.text_heads)

    @property
    def text_dim(self) -> int:
        return self.text_heads[0].in_dim

    @property
    def image_dim(self) -> int:
        return self.image_heads[0].in_dim

    @property
    def version(self) -> str:
        """``<head>-<dim>x<members>-<hash of the weights>``: equal weights give equal versions."""
        h = hashlib.sha256()
        for head in (*self.text_heads, *self.image_heads):
            for arr in (head.mean, head.scale, *(head.params[k] for k in HEAD_PARAMS[head.kind])):
                h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        h.update(f"{self.text_encoder}|{self.image_encoder}".encode())
        kind = self.text_heads[0].kind
        return f"{kind}-{self.text_heads[0].dim}x{len(self.text_heads)}-{h.hexdigest()[:12]}"

    def project_text(self, x: np.ndarray) -> np.ndarray:
        """``(n, text_dim)`` text-encoder vectors → ``(n, dim)`` float32, L2-normalised joint vectors."""
        return _ensemble(self.text_heads, x)

    def project_image(self, x: np.ndarray) -> np.ndarray:
        """``(n, image_dim)`` image-encoder vectors → ``(n, dim)`` float32, L2-normalised joint vectors."""
        return _ensemble(self.image_heads, x)

    def save(self, directory: str | Path) -> Path:
        """Write ``weights.npz`` and ``manifest.json`` (config, metrics, encoders, version) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for side, heads in (("text", self.text_heads), ("image", self.image_heads)):
            for i, head in enumerate(heads):
                arrays[f"{side}.{i}.mean"] = head.mean
                arrays[f"{side}.{i}.scale"] = head.scale
                for name in HEAD_PARAMS[head.kind]:
                    arrays[f"{side}.{i}.{name}"] = np.asarray(head.params[name], dtype=np.float32)
        np.savez(directory / WEIGHTS, **arrays)
        manifest = {
            "format": FORMAT_VERSION,
            "kind": "align",
            "version": self.version,
            "head": self.text_heads[0].kind,
            "members": len(self.text_heads),
            "dim": self.dim,
            "text_dim": self.text_dim,
            "image_dim": self.image_dim,
            "text_encoder": self.text_encoder,
            "image_encoder": self.image_encoder,
            "logit_scales": list(self.logit_scales),
            "config": dict(self.config),
            "metrics": dict(self.metrics),
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        log.info("saved alignment %s to %s", self.version, directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AlignmentModel:
        """Read what :meth:`save` wrote.

        Raises:
            ArtifactError: missing or unreadable files, unknown format, or a version mismatch.
        """
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
            with np.load(directory / WEIGHTS) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read the alignment in {directory}: {exc}") from exc
        if manifest.get("format") != FORMAT_VERSION or manifest.get("kind") != "align":
            raise ArtifactError(
                f"{directory / MANIFEST}: expected an align manifest of format {FORMAT_VERSION}, "
                f"got kind={manifest.get('kind')!r} format={manifest.get('format')!r}"
            )
        kind, members = manifest["head"], int(manifest["members"])
        try:
            heads = {
                side: tuple(
                    Head(
                        kind,
                        arrays[f"{side}.{i}.mean"],
                        arrays[f"{side}.{i}.scale"],
                        {n: arrays[f"{side}.{i}.{n}"] for n in HEAD_PARAMS.get(kind, ())},
                    )
                    for i in range(members)
                )
                for side in ("text", "image")
            }
        except KeyError as exc:
            raise ArtifactError(f"{directory / WEIGHTS}: missing array {exc}") from None
        model = cls(
            text_heads=heads["text"],
            image_heads=heads["image"],
            logit_scales=tuple(float(s) for s in manifest.get("logit_scales", ())),
            text_encoder=manifest.get("text_encoder", ""),
            image_encoder=manifest.get("image_encoder", ""),
            config=manifest.get("config", {}),
            metrics=manifest.get("metrics", {}),
        )
        if model.version != manifest.get("version"):
            raise ArtifactError(
                f"{directory}: weights do not match the manifest (version {model.version} != {manifest.get('version')})"
            )
        return model


def _ensemble(heads: tuple[Head, ...], x: np.ndarray) -> np.ndarray:
    if len(heads) == 1:
        return heads[0](x)
    out = np.concatenate([h(x) for h in heads], axis=1) / np.float32(np.sqrt(len(heads)))
    return out.astype(np.float32, copy=False)
