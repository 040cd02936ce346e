"""ImageDataModule: the digits split, transforms, MixUp, folders (missing, empty, corrupt), IDX files."""

import gzip
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tzoo.tasks.vision.data import ImageDataModule
from tzoo.tasks.vision.images import FASHION_MNIST_DIR, read_idx


def test_digits_split_is_fixed_stratified_and_normalised():
    data = ImageDataModule("digits", batch_size=32)
    assert (data.num_classes, data.image_size, data.in_channels) == (10, (8, 8), 1)
    data.setup()
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 360 and sizes["val"] == 180
    test_labels = data.splits["test"].labels
    assert torch.bincount(test_labels).min() >= 34  # every class about a fifth of its images
    other = ImageDataModule("digits", seed=1)
    other.setup()
    assert torch.equal(other.splits["test"].images, data.splits["test"].images)  # the seed moves val only
    assert not torch.equal(other.splits["val"].images, data.splits["val"].images)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert abs(x.mean().item()) < 0.3 and 0.7 < x.std().item() < 1.3


def test_upsampling_and_augmentations():
    data = ImageDataModule("digits", image_size=16, batch_size=8, crop_padding=2, hflip=True, auto_augment="trivial", random_erasing=0.5)
    assert data.image_size == (16, 16)
    x, _ = next(iter(data.train_dataloader()))
    assert x.shape == (8, 1, 16, 16)
    val_x, _ = next(iter(data.val_dataloader()))
    again, _ = next(iter(data.val_dataloader()))
    assert torch.equal(val_x, again)  # no augmentation outside training


def test_mixup_and_cutmix_give_soft_labels():
    data = ImageDataModule("digits", batch_size=16, mixup_alpha=0.8, cutmix_alpha=1.0)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and y.shape == (16, 10)
    assert torch.allclose(y.sum(-1), torch.ones(16)) and (y.max(-1).values < 1).any()


def test_no_side_effects_in_init(tmp_path):
    ImageDataModule("mnist", data_dir=str(tmp_path / "mnist"))
    ImageDataModule("folder", data_dir=str(tmp_path / "nowhere"), image_size=8)
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_and_bad_settings(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; valid datasets: digits, mnist, fashion_mnist, cifar10, folder"):
        ImageDataModule("imagenet")
    with pytest.raises(ValueError, match=r"dataset='folder' needs data_dir="):
        ImageDataModule("folder", image_size=8)
    with pytest.raises(ValueError, match=r"dataset='folder' needs image_size="):
        ImageDataModule("folder", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"auto_augment='auto' is not one of \(None, 'trivial', 'rand'\)"):
        ImageDataModule(auto_augment="auto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"random_erasing is a probability in \[0, 1\], got 2"):
        ImageDataModule(random_erasing=2)


def _image_folder(root, classes=("cat", "dog", "eel"), per_class=5, size=(12, 10)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_folder_dataset_and_predict_dir(tmp_path):
    root = _image_folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    data = ImageDataModule("folder", data_dir=str(root), image_size=8, batch_size=4, val_size=3, predict_dir=str(root / "dog"))
    assert data.classes == ("cat", "dog", "eel") and (data.num_classes, data.in_channels) == (3, 3)
    data.setup()
    assert len(data.splits["train"]) == 12 and len(data.splits["val"]) == 3
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and set(y.tolist()) <= {0, 1, 2}
    assert len(data.predict_files) == 5 and next(iter(data.predict_dataloader()))[0].shape == (4, 3, 8, 8)


def test_folder_with_train_and_val_subfolders(tmp_path):
    _image_folder(tmp_path / "train", per_class=3)
    _image_folder(tmp_path / "val", per_class=2)
    data = ImageDataModule("folder", data_dir=str(tmp_path), image_size=(8, 6))
    data.setup()
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [9, 6, 6]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder '.*nowhere' does not exist"):
        ImageDataModule("folder", data_dir=str(tmp_path / "nowhere"), image_size=8).num_classes
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"image folder '.*empty' has no class subfolders"):
        ImageDataModule("folder", data_dir=str(tmp_path / "empty"), image_size=8).setup()
    (tmp_path / "hollow" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"image folder '.*hollow' has one class subfolder \('cat'\): a classifier needs at least 2"):
        ImageDataModule("folder", data_dir=str(tmp_path / "hollow"), image_size=8).num_classes
    (tmp_path / "hollow" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"image folder '.*hollow' has no readable images in its class subfolders \['cat', 'dog'\]"):
        ImageDataModule("folder", data_dir=str(tmp_path / "hollow"), image_size=8).setup()
    with pytest.raises(FileNotFoundError, match=r"predict_dir '.*gone' does not exist"):
        ImageDataModule("digits", predict_dir=str(tmp_path / "gone")).setup()


def test_corrupt_images_are_skipped_with_a_warning_naming_them(tmp_path):
    root = _image_folder(tmp_path / "pets", per_class=3)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    good = (root / "eel" / "0.png").read_bytes()
    (root / "eel" / "truncated.png").write_bytes(good[: len(good) // 2])
    data = ImageDataModule("folder", data_dir=str(root), image_size=8, val_size=1)
    with pytest.warns(UserWarning, match=r"skipping unreadable image file '.*(broken|truncated).png'") as record:
        data.setup()
    assert any("truncated.png" in str(w.message) for w in record)
    paths = [p for p, _ in data.splits["train"].samples + data.splits["val"].samples]
    assert len(paths) == 9 and not any("broken" in p or "truncated" in p for p in paths)


def test_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    # (PIL's own convert("RGB") clips 16-bit values at 255: a 16-bit scan became about two grey levels)
    from tzoo.tasks.vision.images import FileImages

    levels = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    for name in ("a", "b"):
        (tmp_path / "scans" / name).mkdir(parents=True)
        Image.fromarray(levels).save(tmp_path / "scans" / name / "0.png")
    path = tmp_path / "scans" / "a" / "0.png"
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # PIL reads it as 16-bit
    image, _ = FileImages([(str(path), 0)], lambda rgb: torch.as_tensor(np.asarray(rgb)))[0]  # (H, W, 3) uint8
    expected = torch.as_tensor(np.round(levels / 257).astype(np.uint8))
    assert image.dtype == torch.uint8 and all(torch.equal(image[..., c], expected) for c in range(3))
    data = ImageDataModule("folder", data_dir=str(tmp_path / "scans"), image_size=8)
    assert data.load_images([path])[0, 0].unique().numel() == 64  # every level distinct after normalisation too


def test_read_idx(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = (0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + images.tobytes())
    assert np.array_equal(read_idx(path), images)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x03" + bytes(20))
    with pytest.raises(ValueError, match=r"'.*bad' is not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "bad")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_files():
    data = ImageDataModule("fashion_mnist", val_size=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to download
        data.prepare_data()
    data.setup()
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [55000, 5000, 10000]
    x, y = data.splits["test"][0]
    assert x.shape == (1, 28, 28) and y.item() == 9  # the first test image is an ankle boot


def test_training_batches_are_normalised_once_per_batch_with_the_same_result(monkeypatch):
    def first_batch():
        data = ImageDataModule("digits", batch_size=16, crop_padding=1, hflip=True, mixup_alpha=0.5)
        torch.manual_seed(0)
        return data, next(iter(data.train_dataloader()))

    data, (x, y) = first_batch()
    assert data.splits["train"][0][0].dtype == torch.uint8  # the split holds augmented uint8 images
    assert x.dtype == torch.float32 and y.shape == (16, 10)
    monkeypatch.setattr(ImageDataModule, "_batched_train", property(lambda self: False))
    other, (x_each, y_each) = first_batch()  # every image converted and normalised on its own
    assert other.splits["train"][0][0].dtype == torch.float32
    assert torch.allclose(x, x_each, atol=1e-6) and torch.allclose(y, y_each)
    with_erasing = ImageDataModule("digits", random_erasing=0.5)
    with_erasing.setup()
    assert not with_erasing._batched_train and with_erasing.splits["train"][0][0].dtype == torch.float32
