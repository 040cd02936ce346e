"""Every dataset download, without network, ends `tzoo fit` with one line naming what failed, why,
and the offline alternatives (exit 2, no traceback). The network is cut where the libraries reach
it: torchvision's downloader raises urllib's URLError (the MNIST family then gives up with its
RuntimeError listing every mirror), and urllib's urlopen for the LM's URL corpora."""

import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torchvision.datasets.cifar
import torchvision.datasets.mnist

from tzoo.tasks.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NO_NETWORK = urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))


def offline(*args, **kwargs):
    raise NO_NETWORK


def one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tzoo: error: "), line
    return line


@pytest.mark.parametrize(("dataset", "cause", "files"), [
    ("mnist", r"RuntimeError: Error downloading train-images-idx3-ubyte\.gz: Tried https://\S+, got: <urlopen error", "MNIST/raw"),
    ("fashion_mnist", r"RuntimeError: Error downloading train-images-idx3-ubyte\.gz:", "FashionMNIST/raw"),
    ("cifar10", r"URLError: <urlopen error \[Errno -3\] Temporary failure in name resolution>", "cifar-10-python.tar.gz"),
])  # fmt: skip
def test_vision_downloads_fail_in_one_line_naming_the_offline_alternatives(tmp_path, monkeypatch, capsys, dataset, cause, files):
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    monkeypatch.setattr("tzoo.tasks.vision.data.FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    line = one_line_error(capsys, ["fit", "--config", str(CONFIGS / "vision" / "digits.yaml"), "--data.init_args.dataset", dataset,
                                   "--data.init_args.data_dir", str(tmp_path / "data"), "--trainer.default_root_dir", str(tmp_path / "runs")])  # fmt: skip
    assert line.startswith(f"tzoo: error: could not download {dataset!r} into '{tmp_path / 'data'}' (")
    assert re.search(cause, line), line
    assert "without network access: " in line and "dataset='digits'" in line and "dataset='folder' with data_dir=" in line
    assert f"to '{tmp_path / 'data' / files}'" in line
    assert ("apt-get install dataset-fashion-mnist" in line) == (dataset == "fashion_mnist")


def test_url_corpus_download_fails_in_one_line_naming_the_offline_corpora(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    line = one_line_error(capsys, ["fit", "--task", "lm", "--data.init_args.corpus", "tinyshakespeare",
                                   "--data.init_args.cache_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path / "runs")])  # fmt: skip
    assert re.fullmatch(
        r"tzoo: error: could not download the corpus https://raw\.githubusercontent\.com/\S+/input\.txt "
        r"\(<urlopen error \[Errno -3\] Temporary failure in name resolution>\); without network access give a local "
        r"text file as the corpus \(this URL's file, downloaded elsewhere\), or a corpus that needs no network: "
        r"'shakespeare' \(the plays, installed with tzoo\) or 'python-stdlib'",
        line,
    ), line
    assert not list(tmp_path.rglob("*input.txt"))  # nothing partial kept
