"""The digits shipped with tzoo (digits.npz) and the numpy stratified split give exactly what
scikit-learn gave before: the same images and labels and the same train / val / test splits
(checksums taken with scikit-learn 1.9.1's load_digits and train_test_split), and the split equals
scikit-learn's own where it is installed."""

import hashlib

import numpy as np
import pytest

from tzoo.tasks.vision.data import ImageDataModule
from tzoo.tasks.vision.images import DIGITS_FILE, load_digits, stratified_split

DIGITS_SHA256 = "0b7e9c3202d7bcd255d6a19a238d3743bf5e320ba74812a6679958a017c55382"
SPLITS_SHA256 = {
    0: "94f461a98c334f29e527a7f202428faf018aba1d733918a8226db799dc206c6c",
    1: "2a95cfe46608b3356f7c637d928bfe42c680b36087ae3a5cb38cb541bc79a679",
    7: "7970c7527a90610ed4c7cd749cfea3720b722238effc94aaaa2686a478ac852f",
}


def test_shipped_digits_are_the_images_and_labels_scikit_learn_gave():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and str(images.dtype) == "torch.uint8" and str(labels.dtype) == "torch.int64"
    assert hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest() == DIGITS_SHA256
    assert DIGITS_FILE.stat().st_size < 60_000 and DIGITS_FILE.with_suffix(".LICENSE").is_file()


@pytest.mark.parametrize("seed", sorted(SPLITS_SHA256))
def test_digits_splits_are_the_ones_scikit_learn_made(seed):
    data = ImageDataModule(dataset="digits", image_size=8, seed=seed)
    data.setup("fit")
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        digest.update(data.splits[split].images.numpy().tobytes())
        digest.update(data.splits[split].labels.numpy().tobytes())
    assert [len(data.splits[s].labels) for s in ("train", "val", "test")] == [1257, 180, 360]
    assert digest.hexdigest() == SPLITS_SHA256[seed]


def test_split_equals_scikit_learns_train_test_split():
    model_selection = pytest.importorskip("sklearn.model_selection")
    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 10, 1797), 0.2), (rng.integers(0, 3, 50), 0.3), (np.repeat([4, 7, 9], [2, 5, 40]), 0.25),
             (rng.integers(0, 5, 333), 0.125), (np.array(list("aabbbcccc") * 3), 0.5)]  # fmt: skip
    for labels, fraction in cases:
        for seed in (0, 3, 1337):
            rest, held = stratified_split(labels, fraction, seed)
            theirs = model_selection.train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed)
            assert rest.tolist() == sorted(theirs[0]) and held.tolist() == sorted(theirs[1])


def test_split_holds_out_each_class_in_proportion():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    rest, held = stratified_split(labels, 0.2, 5)
    assert len(held) == 20 and sorted(np.concatenate([rest, held]).tolist()) == list(range(100))
    assert np.bincount(labels[held]).tolist() == [2, 4, 6, 8]


def test_a_class_too_small_to_split_is_refused():
    with pytest.raises(ValueError, match=r"cannot hold out 0\.2 of 11 items stratified over 2 classes \(smallest class: 1 items\)"):
        stratified_split(np.array([0] * 10 + [1]), 0.2, 0)
