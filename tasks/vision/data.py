"""Image datasets by name -> train / val / test splits with per-dataset normalisation and
augmentations from config (torchvision ``transforms.v2``: random crop, flip, TrivialAugment /
RandAugment, random erasing; MixUp / CutMix on whole batches).

Datasets
- ``digits``: the 1,797 8x8 UCI digits shipped with tzoo (``digits.npz``, offline; the copy
  scikit-learn bundles). A fixed stratified split: 20% test (always the same images), 10%
  validation, 70% train.
- ``fashion_mnist``: Debian's ``dataset-fashion-mnist`` IDX files under
  ``/usr/share/datasets/fashion-mnist/`` when installed, else torchvision's download into
  ``data_dir`` (in ``prepare_data``).
- ``mnist``, ``cifar10``: torchvision's download into ``data_dir`` (needs network once).
  These three hold out 5,000 training images for validation and test on the official test set.
- ``folder``: an ``ImageFolder``-style directory (``<data_dir>/<class>/<image>``), or one with
  ``train/``, ``val/`` (and optionally ``test/``) inside. Images are converted to RGB and resized
  to ``image_size``. Unreadable image files are skipped with a warning that names them.

In-memory datasets keep their images as uint8 (N, C, H, W) tensors; a different ``image_size`` is
applied once, when they are loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from tzoo.tasks.files import cache_dir
from tzoo.tasks.vision.images import (
    DATASETS,
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    BatchCollate,
    DatasetInfo,
    FileImages,
    TensorImages,
    folder_classes,
    folder_samples,
    load_digits,
    read_idx,
    readable_image,
    resize_images,
    stratified_split,
)

__all__ = ["ImageDataModule"]

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # for folders of natural RGB photos
_SPLIT_SEED = 0  # the held-out test images never change with the user's seed


class ImageDataModule(pl.LightningDataModule):
    """Labelled images by dataset name; links ``num_classes``, ``image_size`` and ``in_channels``
    into the model.

    ``image_size`` (an int or (height, width)): the size the model sees; default the dataset's own
    (required for ``folder``). ``crop_padding``: random crops of the image padded by that many
    pixels; ``hflip``: random horizontal flips; ``auto_augment``: ``"trivial"`` (TrivialAugmentWide)
    or ``"rand"`` (RandAugment); ``random_erasing``: its probability; ``mixup_alpha`` /
    ``cutmix_alpha``: > 0 turns them on. ``seed`` draws the train/validation split (the test images
    are fixed). ``predict_dir``: a folder of images (any layout) for ``tzoo predict``; without it,
    predict runs on the test split.
    """

    model_links = ("num_classes", "image_size", "in_channels")  # copied into the model by the CLI

    def __init__(
        self,
        dataset: str = "digits",
        *,
        data_dir: str | None = None,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 128,
        crop_padding: int = 0,
        hflip: bool = False,
        auto_augment: Literal["trivial", "rand"] | None = None,
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        val_size: int = 5000,
        predict_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """``val_size``: training images held out for validation by mnist, fashion_mnist and cifar10
        (and a folder without val/); digits holds out 10%."""
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
        if dataset == "folder" and data_dir is None:
            raise ValueError("dataset='folder' needs data_dir=<a folder of class subfolders of images>")
        if dataset == "folder" and image_size is None:
            raise ValueError("dataset='folder' needs image_size= (its images come in any size; e.g. 224 or 32)")
        if image_size is not None:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
        if auto_augment not in (None, "trivial", "rand"):
            raise ValueError(f"auto_augment={auto_augment!r} is not one of (None, 'trivial', 'rand')")
        for name, value in dict(batch_size=batch_size, val_size=val_size).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in dict(crop_padding=crop_padding, num_workers=num_workers, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha).items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {random_erasing}")
        # image_size goes to the logged hyperparameters through the model (the resolved size); saved
        # here too, as None, Lightning would refuse the two disagreeing values
        self.save_hyperparameters(ignore=["image_size"])
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed
        self.crop_padding, self.hflip, self.auto_augment, self.random_erasing = crop_padding, hflip, auto_augment, random_erasing
        self.mixup_alpha, self.cutmix_alpha, self.val_size = mixup_alpha, cutmix_alpha, val_size
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else cache_dir("vision")
        self.predict_dir = Path(predict_dir).expanduser() if predict_dir is not None else None
        self._size = None if image_size is None else (size[0], size[1])
        self._folder_classes: list[str] | None = None
        self.splits: dict[str, Dataset] = {}
        self.predict_files: list[str] = []

    # --- what the model needs ---------------------------------------------------------------

    @property
    def info(self) -> DatasetInfo | None:
        return DATASETS[self.dataset]

    @property
    def classes(self) -> tuple[str, ...]:
        if self.info is not None:
            return self.info.classes
        if self._folder_classes is None:  # a directory listing, not a scan of the images
            self._folder_classes = folder_classes(self._folder_root("train"))
        return tuple(self._folder_classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        if self._size is not None:
            return self._size
        assert self.info is not None  # folder requires image_size
        return self.info.image_size

    @property
    def in_channels(self) -> int:
        return self.info.channels if self.info is not None else 3  # folder images are read as RGB

    @property
    def mean(self) -> tuple[float, ...]:
        return self.info.mean if self.info is not None else _IMAGENET_STATS[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self.info.std if self.info is not None else _IMAGENET_STATS[1]

    # --- transforms -------------------------------------------------------------------------

    def _transform(self, *, train: bool, from_file: bool = False, batched: bool = False) -> v2.Compose:
        """The per-image transform of a split. ``batched`` (training images held as uint8 tensors,
        no random erasing): the augmentations only, on uint8 images; :meth:`_batch_transform` then
        converts and normalises each stacked batch at once (~100 us an image less on the CPU)."""
        if batched:
            return v2.Compose(self._augmentations() or [v2.Identity()])
        steps: list[Callable[..., Any]] = []
        if from_file:  # PIL image of any size -> uint8 tensor of image_size
            steps += [v2.ToImage(), v2.Resize(min(self.image_size), antialias=True), v2.CenterCrop(self.image_size)]
        if train:
            steps += self._augmentations()
        steps += self._batch_transform().transforms
        if train and self.random_erasing:
            steps.append(v2.RandomErasing(p=self.random_erasing))
        return v2.Compose(steps)

    def _augmentations(self) -> list[Callable[..., Any]]:
        steps: list[Callable[..., Any]] = []
        if self.crop_padding:
            steps.append(v2.RandomCrop(self.image_size, padding=self.crop_padding))
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if self.auto_augment == "trivial":
            steps.append(v2.TrivialAugmentWide())
        elif self.auto_augment == "rand":
            steps.append(v2.RandAugment())
        return steps

    def _batch_transform(self) -> v2.Compose:
        """uint8 images (any leading dims) -> float, normalised with the dataset's statistics."""
        return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    @property
    def _batched_train(self) -> bool:
        """Whether the training split converts and normalises whole batches (see :meth:`_transform`)."""
        return self.dataset != "folder" and not self.random_erasing

    # --- Lightning hooks --------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download what needs downloading (mnist, cifar10, fashion_mnist without the Debian files)."""
        if self._torchvision_class() is None:
            return
        try:
            for train in (True, False):
                self._torchvision_class()(str(self.data_dir), train=train, download=True)  # type: ignore[misc]
        # URLError and friends are OSErrors; torchvision's MNIST family ends its mirror loop with a
        # RuntimeError("Error downloading ...") listing each mirror's error
        except (OSError, RuntimeError) as err:
            raise ConnectionError(self._download_failure(err)) from err

    def _download_failure(self, err: BaseException) -> str:
        """One line: what failed, why (the cause, on one line), and the ways to train without network."""
        cause = " ".join(str(err).split())
        cause = cause if len(cause) <= 300 else cause[:297] + "..."
        cls = self._torchvision_class()
        files = self.data_dir / cls.__name__ / "raw" if cls.__name__ != "CIFAR10" else self.data_dir / "cifar-10-python.tar.gz"
        offline = []
        if self.dataset == "fashion_mnist":
            offline.append(f"install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist; tzoo reads its files under {FASHION_MNIST_DIR})")
        offline += [
            "dataset='digits' (the 8x8 digits installed with tzoo)",
            "dataset='folder' with data_dir=<a folder of class folders of images>",
            f"or copy the dataset's files, downloaded elsewhere, to {str(files)!r}",
        ]
        return (
            f"could not download {self.dataset!r} into {str(self.data_dir)!r} ({type(err).__name__}: {cause}); "
            f"without network access: {'; '.join(offline)}"
        )

    def _torchvision_class(self) -> Any:
        from torchvision import datasets

        if self.dataset == "fashion_mnist" and not self._debian_fashion_mnist():
            return datasets.FashionMNIST
        return {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}.get(self.dataset)

    @staticmethod
    def _debian_fashion_mnist() -> bool:
        return all((FASHION_MNIST_DIR / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.dataset == "folder":
            self._setup_folder()
        else:
            self._setup_tensors()
        if self.predict_dir is not None:
            self._setup_predict()

    def _setup_tensors(self) -> None:
        if self.dataset == "digits":
            images, labels = load_digits()
            rest, test = stratified_split(labels, 0.2, _SPLIT_SEED)
            train, val = stratified_split(labels[rest], 0.125, self.seed)  # 10% of all
            train, val = rest[train], rest[val]
            parts = {"train": (images[train], labels[train]), "val": (images[val], labels[val]), "test": (images[test], labels[test])}
        else:
            (images, labels), test_part = self._load("train"), self._load("test")
            if self.val_size >= len(labels):
                raise ValueError(f"val_size={self.val_size} leaves no training images ({self.dataset} has {len(labels)})")
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
            train, val = order[self.val_size :].sort().values, order[: self.val_size].sort().values
            parts = {"train": (images[train], labels[train]), "val": (images[val], labels[val]), "test": test_part}
        for split, (x, y) in parts.items():
            train = split == "train"
            transform = self._transform(train=train, batched=train and self._batched_train)
            self.splits[split] = TensorImages(resize_images(x, self.image_size), y, transform)

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of a downloadable dataset."""
        if self.dataset == "fashion_mnist" and self._debian_fashion_mnist():
            images_file, labels_file = FASHION_MNIST_FILES[split]
            images = torch.from_numpy(read_idx(FASHION_MNIST_DIR / images_file).copy())[:, None]
            return images, torch.from_numpy(read_idx(FASHION_MNIST_DIR / labels_file).astype(np.int64))
        try:
            data = self._torchvision_class()(str(self.data_dir), train=split == "train", download=False)
        except RuntimeError as err:  # "Dataset not found": prepare_data was not run (or failed)
            raise FileNotFoundError(f"{self.dataset!r} is not in {str(self.data_dir)!r} ({err}); run prepare_data() first") from None
        images = torch.as_tensor(np.asarray(data.data))
        images = images.permute(0, 3, 1, 2) if images.dim() == 4 else images[:, None]  # (N, C, H, W)
        return images.contiguous(), torch.as_tensor(data.targets, dtype=torch.long)

    def _folder_root(self, split: str) -> Path:
        """Where a split's class folders are: <data_dir>/<split> when data_dir has train/, else data_dir."""
        if not (self.data_dir / "train").is_dir():
            if not self.data_dir.is_dir():
                raise FileNotFoundError(f"image folder {str(self.data_dir)!r} does not exist")
            return self.data_dir
        if split == "test" and not (self.data_dir / "test").is_dir():
            split = "val"
        return self.data_dir / split

    def _setup_folder(self) -> None:
        classes = list(self.classes)
        samples = folder_samples(self._folder_root("train"), classes)
        if self._folder_root("train") != self.data_dir and (self.data_dir / "val").is_dir():
            parts = {"train": samples, "val": folder_samples(self._folder_root("val"), classes)}
            parts["test"] = folder_samples(self._folder_root("test"), classes) if (self.data_dir / "test").is_dir() else parts["val"]
        else:  # one folder: hold out val_size images (at most a fifth) for validation and test
            order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(self.seed)).tolist()
            held = max(1, min(self.val_size, len(samples) // 5))
            parts = {"train": [samples[i] for i in sorted(order[held:])], "val": [samples[i] for i in sorted(order[:held])]}
            parts["test"] = parts["val"]
        for split, part in parts.items():
            self.splits[split] = FileImages(part, self._transform(train=split == "train", from_file=True))

    def _setup_predict(self) -> None:
        assert self.predict_dir is not None
        if not self.predict_dir.is_dir():
            raise FileNotFoundError(f"predict_dir {str(self.predict_dir)!r} does not exist")
        files = sorted(str(p) for p in self.predict_dir.rglob("*") if p.is_file() and readable_image(str(p)))
        if not files:
            raise ValueError(f"predict_dir {str(self.predict_dir)!r} has no readable image files")
        self.predict_files = files
        self.splits["predict"] = FileImages([(f, -1) for f in files], self._file_transform())

    def _file_transform(self) -> v2.Compose:
        transform = self._transform(train=False, from_file=True)
        if self.in_channels == 1:  # a grayscale dataset's model: read the files as one channel
            transform = v2.Compose([v2.Grayscale(), transform])
        return transform

    def load_images(self, paths: Sequence[str | Path]) -> Tensor:
        """Image files as the model sees this dataset's images (channels, size, normalisation):
        (n, C, H, W)."""
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"image file {str(path)!r} does not exist")
        images = FileImages([(str(p), -1) for p in paths], self._file_transform())
        return torch.stack([images[i][0] for i in range(len(images))])

    def train_dataloader(self) -> DataLoader:
        collate = None
        batch_transform = self._batch_transform() if self._batched_train else None
        if self.mixup_alpha > 0 or self.cutmix_alpha > 0 or batch_transform is not None:
            collate = BatchCollate(self.num_classes, mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha, batch_transform=batch_transform)
        train = self._split("train")
        return self._loader(train, shuffle=True, drop_last=len(train) > self.batch_size, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._split("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._split("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._split("predict" if self.predict_dir is not None else "test"))

    def _split(self, split: str) -> Dataset:
        if not self.splits:
            self.setup()
        return self.splits[split]

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        workers = self.num_workers
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=workers, persistent_workers=workers > 0, **kwargs)

    def example_images(self, n: int) -> tuple[Tensor, Tensor]:
        """Up to ``n`` fixed validation images, one per class as far as they go, with their
        labels: normalised images (n, C, H, W) and labels (n,) (for the attention figures)."""
        val = self._split("val")
        chosen: list[int] = []
        seen: set[int] = set()
        for i in range(len(val)):  # type: ignore[arg-type]
            label = int(val[i][1])
            if label not in seen:
                seen.add(label)
                chosen.append(i)
            if len(chosen) == n:
                break
        images, labels = zip(*(val[i] for i in chosen))
        return torch.stack(images), torch.stack(labels)
