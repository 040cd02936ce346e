"""Where the vision task's images come from: facts about each named dataset, the IDX reader
(MNIST's file format), the digits shipped with tzoo (``digits.npz``), in-memory and file-backed datasets, image-folder
scanning (unreadable files skipped with a warning naming them), and the MixUp / CutMix collate.

``data.py`` turns these into train / val / test splits.
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES",
    "BatchCollate",
    "DatasetInfo",
    "FileImages",
    "TensorImages",
    "folder_classes",
    "folder_samples",
    "load_digits",
    "read_idx",
    "rgb_image",
    "readable_image",
    "resize_images",
    "stratified_split",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    image_size: tuple[int, int]  # native (height, width)
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetInfo | None] = {
    # mean/std of the pixels scaled to [0, 1]: digits' measured here (all 1,797 images), the others
    # the commonly quoted training-set values
    "digits": DatasetInfo(10, (8, 8), 1, (0.3053,), (0.3759,), _DIGITS),
    "mnist": DatasetInfo(10, (28, 28), 1, (0.1307,), (0.3081,), _DIGITS),
    "fashion_mnist": DatasetInfo(
        10, (28, 28), 1, (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetInfo(
        10, (32, 32), 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
    "folder": None,  # read from the folder
}


# --- reading ------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format; gzipped or not) as a numpy array: images (N, rows, cols)
    uint8, labels (N,) uint8."""
    path = Path(path)
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08 or not 1 <= magic & 0xFF <= 3:  # 0x08: unsigned bytes; low byte: dimensions
        raise ValueError(f"{str(path)!r} is not an IDX file of unsigned bytes (magic number {magic:#010x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{str(path)!r} is truncated: its header says {shape}, it holds {array.size} bytes")
    return array.reshape(shape)


DIGITS_FILE = Path(__file__).with_name("digits.npz")  # provenance and licence: digits.LICENSE beside it


def load_digits() -> tuple[Tensor, Tensor]:
    """The 1,797 8x8 digits shipped with tzoo (the UCI handwritten digits' test set, the copy
    scikit-learn bundles, in the same order): uint8 images (N, 1, 8, 8) and int64 labels (N,)."""
    with np.load(DIGITS_FILE) as data:
        pixels, labels = data["pixels"], data["labels"]  # (N, 8, 8) counts 0..16, (N,) digits
    # pixel values 0..16 -> 0..255, so every dataset enters the transforms as uint8
    images = np.round(pixels * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, C, H, W), once for the whole set (antialiased bilinear)."""
    if tuple(images.shape[-2:]) == size:
        return images
    out = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def stratified_split(labels: Tensor | np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out) sorted indices: ceil(fraction * N) held out, each class in proportion.

    The same draw as scikit-learn's ``train_test_split(..., test_size=fraction, stratify=labels,
    random_state=seed)`` (its ``StratifiedShuffleSplit``: per-class counts by largest remainder with
    ties broken at random, then a permutation of each class, all from one ``RandomState(seed)``), so
    splits made before tzoo stopped depending on scikit-learn are unchanged."""
    y = np.asarray(labels)
    n_held = math.ceil(fraction * len(y))
    n_rest = len(y) - n_held
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2 or min(n_rest, n_held) < len(classes):
        raise ValueError(
            f"cannot hold out {fraction} of {len(y)} items stratified over {len(classes)} classes "
            f"(smallest class: {counts.min()} items); every class needs >= 2 items and each part >= one per class"
        )
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])  # indices of each class
    rng = np.random.RandomState(seed)
    rest_counts = _apportion(counts, n_rest, rng)
    held_counts = _apportion(counts - rest_counts, n_held, rng)
    rest, held = [], []
    for items, r, h in zip(members, rest_counts, held_counts):
        shuffled = items.take(rng.permutation(len(items)), mode="clip")
        rest.append(shuffled[:r])
        held.append(shuffled[r : r + h])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def _apportion(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """``draws`` items shared among classes of ``counts`` in proportion: the floors, then one more for
    the largest remainders, ties broken at random (scikit-learn's ``_approximate_mode``)."""
    share = counts / counts.sum() * draws
    taken = np.floor(share)
    missing = int(draws - taken.sum())
    remainder = share - taken
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        now = min(len(tied), missing)
        taken[rng.choice(tied, size=now, replace=False)] += 1
        missing -= now
    return taken.astype(int)


# --- datasets -----------------------------------------------------------------------------------


class TensorImages(Dataset):
    """uint8 images (N, C, H, W) and labels (N,) -> (transform(image), label)."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.images[i]), self.labels[i]


class FileImages(Dataset):
    """(path, label) pairs -> (transform(RGB image), label). ``label`` -1: unlabelled (predict)."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Any], Tensor]) -> None:
        self.samples, self.transform = list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as image:
                rgb = rgb_image(image)
        except OSError as err:  # checked at setup; a file that broke since then still names itself
            raise ValueError(f"cannot read image {path!r}: {err}") from None
        return self.transform(rgb), torch.tensor(label)


def rgb_image(image: Any) -> Any:
    """A PIL image as 8-bit RGB. 16-bit greyscale (PIL modes ``I;16*``, and ``I``, in which older
    Pillows open 16-bit PNGs) is scaled from 0..65535 to 0..255: PIL's own ``convert`` clips those
    values at 255, which leaves an ordinary 16-bit scan about two grey levels."""
    from PIL import Image

    if image.mode == "I" or image.mode.startswith("I;16"):
        pixels = np.asarray(image).astype(np.float64)  # (H, W)
        grey = np.clip(np.round(pixels / 257), 0, 255).astype(np.uint8)  # 65535 / 257 = 255
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def readable_image(path: str) -> bool:
    """Whether ``path`` has an image extension and decodes; warns (naming it) when it doesn't decode."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not path.lower().endswith(IMG_EXTENSIONS):
        return False
    try:
        with Image.open(path) as image:
            image.load()  # decode fully: verify() misses truncated JPEGs
    except (OSError, SyntaxError, ValueError) as err:
        warnings.warn(f"skipping unreadable image file {path!r}: {err}", UserWarning, stacklevel=2)
        return False
    return True


def folder_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise ValueError(
            f"image folder {str(root)!r} has no class subfolders: expected <folder>/<class name>/<image files> "
            f"(or train/ and val/ folders laid out that way)"
        )
    if len(classes) == 1:  # a classifier of one class learns nothing (its loss is 0 from the start)
        raise ValueError(
            f"image folder {str(root)!r} has one class subfolder ({classes[0]!r}): a classifier needs at least 2, "
            f"laid out as <folder>/<class name>/<image files>"
        )
    return classes


def folder_samples(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    from torchvision.datasets.folder import make_dataset

    found = set(folder_classes(root))
    if found != set(classes):
        raise ValueError(
            f"image folder {str(root)!r} has classes {sorted(found)}, but the training folder has {classes}"
        )
    index = {name: i for i, name in enumerate(classes)}
    samples = make_dataset(str(root), index, is_valid_file=readable_image, allow_empty=True)
    if not samples:
        raise ValueError(f"image folder {str(root)!r} has no readable images in its class subfolders {classes}")
    return samples


# --- batches ------------------------------------------------------------------------------------


class BatchCollate:
    """Stack a batch; then, when given, apply ``batch_transform`` to the stacked images (the uint8
    -> float conversion and normalisation, one call for the batch instead of one per image) and
    MixUp or CutMix it (one of them, chosen per batch, when both are on: labels become (B, K)
    probabilities)."""

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        batch_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        mixes: list[Callable[..., Any]] = []
        if mixup_alpha > 0:
            mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.mix = None if not mixes else mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
        self.batch_transform = batch_transform

    def __call__(self, batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        images, labels = default_collate(batch)
        if self.batch_transform is not None:
            images = self.batch_transform(images)
        return self.mix(images, labels) if self.mix is not None else (images, labels)
