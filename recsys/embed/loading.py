"""Decoding and resizing item images in worker processes (a torch ``DataLoader``).

The dataset and collate function are picklable, so they work with any multiprocessing start method.
A worker turns each image into the encoder's input array, or records why it could not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.encoders.access import ImagePolicy
from recsys.encoders.errors import ImageLoadError
from recsys.encoders.images import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT_S, load_image

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Decoded:
    """One image after the worker: ``array`` ``(3, H, W)`` float32, or ``None`` and the error."""

    index: int
    array: np.ndarray | None
    error: ImageLoadError | None


@dataclass
class DecodedBatch:
    """A batch as the main process receives it.

    Attributes:
        ok: positions (in the sources list) of the images in ``tensor``, in order.
        tensor: ``(len(ok), 3, H, W)`` float32, or ``None`` when every image of the batch failed.
        failed: ``(position, error)`` of the images that could not be used.
    """

    ok: list[int]
    tensor: torch.Tensor | None
    failed: list[tuple[int, ImageLoadError]]

    def __len__(self) -> int:
        return len(self.ok) + len(self.failed)


@dataclass(frozen=True)
class ImageSourceDataset:
    """Map-style dataset over image sources (paths or URLs); item ``i`` is a :class:`Decoded`.

    With a ``policy`` (:mod:`recsys.encoders.access`) paths must lie under its roots and its download
    limits apply; without one any path is read and URLs must reach public addresses."""

    sources: Sequence[str]
    preprocess: Callable[[Any], np.ndarray]
    max_pixels: int
    timeout: float = DEFAULT_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES
    policy: ImagePolicy | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Decoded:
        try:
            image = load_image(self.sources[index], self.max_pixels, timeout=self.timeout, max_bytes=self.max_bytes,
                               policy=self.policy)
        except ImageLoadError as exc:
            return Decoded(index, None, exc)
        return Decoded(index, self.preprocess(image), None)


def collate_decoded(samples: list[Decoded]) -> DecodedBatch:
    """Stack the good arrays into one tensor (in the worker, so it travels through shared memory)."""
    import torch

    good = [s for s in samples if s.array is not None]
    tensor = torch.from_numpy(np.stack([s.array for s in good])) if good else None  # type: ignore[misc]
    return DecodedBatch(
        ok=[s.index for s in good],
        tensor=tensor,
        failed=[(s.index, s.error) for s in samples if s.error is not None],
    )


def iter_decoded(dataset: ImageSourceDataset, *, batch_size: int, workers: int) -> Iterator[DecodedBatch]:
    """Batches in source order; ``workers`` processes decode ahead of the consumer (0: in this process)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_decoded,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    yield from loader
