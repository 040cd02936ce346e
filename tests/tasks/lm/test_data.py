"""TextDataModule: corpora, the cache, the split and the random windows. Tiny corpora, no network."""

import hashlib
import http.server
import re
import threading

import numpy as np
import pytest
import torch

import tzoo.tasks.lm.data as data
from tzoo.tasks.lm.data import RandomStarts, TextDataModule, TokenWindows, python_stdlib_text, shakespeare_text

LOWER = "abcdefghijklmnopqrstuvwxyz"


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def split_corpus(tmp_path):
    """900 lower-case letters then 100 upper-case ones: with val_fraction=0.1 the case tells
    which split a character came from."""
    train = (LOWER * 40)[:900]
    return write(tmp_path / "corpus.txt", train + (LOWER.upper() * 4)[:100]), train


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server over tmp_path/served; yields (base url, folder, paths requested)."""
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", served, requests
    server.shutdown()
    server.server_close()


# --- windows and split --------------------------------------------------------------------------


def test_windows_are_shifted_pairs_inside_their_split(split_corpus, tmp_path):
    path, train_text = split_corpus
    dm = TextDataModule(path, block_size=8, batch_size=32, cache_dir=str(tmp_path / "cache"), train_batches=30)
    dm.setup("fit")
    tok = dm.tokenizer
    for loader, alphabet in [(dm.train_dataloader(), set(LOWER)), (dm.val_dataloader(), set(LOWER.upper()))]:
        batches = list(loader)
        assert len(batches) == len(loader)
        for x, y in batches:
            assert x.shape == y.shape == (32, 8) and x.dtype == y.dtype == torch.int64
            assert torch.equal(x[:, 1:], y[:, :-1])
            for row_x, row_y in zip(x, y):
                text = tok.decode(row_x) + tok.decode(row_y[-1:])
                assert set(text) <= alphabet
                if alphabet == set(LOWER):
                    assert text in train_text  # a real contiguous window


def test_random_windows_cover_the_split_and_never_leave_it(tmp_path):
    np.save(tmp_path / "tokens.npy", np.arange(100, dtype=np.uint16))  # token value = position
    windows = TokenWindows(tmp_path / "tokens.npy", block_size=5)
    starts = RandomStarts(10, 60, block_size=5, batch_size=64, num_batches=20, seed=None)
    x, y = map(torch.cat, zip(*(windows[s] for s in starts)))
    assert torch.equal(x, x[:, :1] + torch.arange(5)) and torch.equal(y, x + 1)
    assert x.min() == 10 and y.max() == 59  # first and last possible windows both drawn


def test_split_sizes(split_corpus, tmp_path):
    dm = TextDataModule(split_corpus[0], block_size=8, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    train, val = dm.train_dataloader().sampler, dm.val_dataloader().sampler
    assert (train.start, train.stop, val.start, val.stop) == (0, 900, 900, 1000)
    tokens = np.load(dm.tokenizer_path.parent / "tokens.npy")
    assert tokens.dtype == np.uint16 and len(tokens) == 1000


def test_val_windows_are_fixed_and_train_windows_are_not(split_corpus, tmp_path):
    make = lambda workers: TextDataModule(  # noqa: E731
        split_corpus[0], block_size=8, batch_size=4, num_workers=workers, cache_dir=str(tmp_path / "cache")
    )
    dm = make(0)
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(first) == 20
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    other = list(make(2).val_dataloader())  # the same windows with workers, in the same order
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    epoch1, epoch2 = next(iter(dm.train_dataloader())), next(iter(dm.train_dataloader()))
    assert not torch.equal(epoch1[0], epoch2[0])


def test_train_workers_draw_different_windows(split_corpus, tmp_path):
    dm = TextDataModule(
        split_corpus[0], block_size=8, batch_size=8, num_workers=2, train_batches=4, cache_dir=str(tmp_path / "cache")
    )
    batches = [x for x, _ in dm.train_dataloader()]
    assert len(batches) == 4
    assert not torch.equal(batches[0], batches[1])


def test_trains_with_lightning(split_corpus, tmp_path):
    import lightning.pytorch as pl

    class Bigram(pl.LightningModule):
        def __init__(self, vocab_size):
            super().__init__()
            self.logits = torch.nn.Embedding(vocab_size, vocab_size)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.logits(x).flatten(0, 1), y.flatten())

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.training_step(batch, batch_idx))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = TextDataModule(split_corpus[0], block_size=8, batch_size=4, val_batches=2, cache_dir=str(tmp_path / "cache"))
    trainer = pl.Trainer(
        max_steps=6, val_check_interval=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Bigram(dm.vocab_size), datamodule=dm)
    assert trainer.global_step == 6 and "val_loss" in trainer.callback_metrics


# --- the cache ----------------------------------------------------------------------------------


def test_cache_is_reused(split_corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    dm = TextDataModule(split_corpus[0], block_size=8, cache_dir=str(cache))
    assert not cache.exists()  # __init__ has no side effects; vocab_size prepares
    vocab = dm.vocab_size
    entry = dm.tokenizer_path.parent
    assert vocab == 1 + 52
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "tokenizer.json", "tokens.npy"]
    stamp = (entry / "tokens.npy").stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("the corpus was encoded again")

    monkeypatch.setattr(data, "encode_corpus", no_encoding)
    again = TextDataModule(split_corpus[0], block_size=8, cache_dir=str(cache))
    again.prepare_data()
    again.setup("fit")
    assert again.tokenizer_path == dm.tokenizer_path and again.vocab_size == vocab
    assert (entry / "tokens.npy").stat().st_mtime_ns == stamp


def test_settings_get_their_own_cache_entries(split_corpus, tmp_path):
    cache = tmp_path / "cache"
    paths = {
        TextDataModule(split_corpus[0], tokenizer=kind, bpe_vocab_size=size, cache_dir=str(cache)).tokenizer_path
        for kind, size in [("char", 1024), ("bpe", 300), ("bpe", 400)]
    }
    assert len(paths) == 3


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_encoded_corpus_decodes_to_the_corpus(kind, tmp_path):
    text = "Héllo  wörld\n\n  " * 40 + "tail 😀\n"
    path = write(tmp_path / "c.txt", text)
    dm = TextDataModule(path, tokenizer=kind, bpe_vocab_size=300, block_size=4, cache_dir=str(tmp_path / "cache"))
    tokens = np.load(dm.tokenizer_path.parent / "tokens.npy")
    assert dm.tokenizer.decode(tokens) == text
    assert dm.vocab_size <= (300 if kind == "bpe" else 1 + len(set(text)))


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path))
    assert TextDataModule().cache_dir == tmp_path / "lm"


# --- corpora ------------------------------------------------------------------------------------


def test_folder_corpus_joins_txt_files_in_order(tmp_path):
    folder = tmp_path / "books"
    (folder / "sub").mkdir(parents=True)
    write(folder / "b.txt", "second " * 20)
    write(folder / "sub" / "c.txt", "third " * 20)
    write(folder / "a.txt", "first " * 20)
    write(folder / "notes.md", "ignored")
    dm = TextDataModule(str(folder), block_size=4, cache_dir=str(tmp_path / "cache"))
    text = dm.tokenizer.decode(np.load(dm.tokenizer_path.parent / "tokens.npy"))
    assert text == "\n\n".join(["first " * 20, "second " * 20, "third " * 20])
    assert dm.tokenizer_path.parent.name.startswith("books-char-")


@pytest.mark.parametrize("text", ["", "  \n\t \n"])
def test_empty_corpus(tmp_path, text):
    dm = TextDataModule(write(tmp_path / "empty.txt", text), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="empty.txt.*empty"):
        dm.prepare_data()


def test_corpus_too_short_for_block_size(tmp_path):
    dm = TextDataModule(write(tmp_path / "short.txt", "x" * 100), block_size=16, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"90 train and 10 validation tokens.*block_size=16.*17"):
        dm.setup("fit")


def test_missing_corpus_lists_the_named_ones(tmp_path):
    dm = TextDataModule(str(tmp_path / "nowhere.txt"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"nowhere\.txt.*'shakespeare', 'python-stdlib', 'tinyshakespeare'"):
        dm.prepare_data()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tokenizer": "words"}, "tokenizer='words'"),
        ({"block_size": 0}, "block_size must be >= 1, got 0"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"tokenizer": "bpe", "bpe_vocab_size": 200}, "bpe_vocab_size=200"),
        ({"sha256": "abc"}, "sha256"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TextDataModule(**kwargs)


def test_local_file_checksum(split_corpus, tmp_path):
    path = split_corpus[0]
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    TextDataModule(path, sha256=digest, block_size=8, cache_dir=str(tmp_path / "cache")).prepare_data()
    with pytest.raises(ValueError, match=f"is {digest}, expected {'0' * 64}"):
        TextDataModule(path, sha256="0" * 64, cache_dir=str(tmp_path / "cache")).prepare_data()


# --- downloads (a local server; no network) -----------------------------------------------------


def test_unreachable_url_leaves_no_files(tmp_path):
    cache = tmp_path / "cache"
    url = "http://127.0.0.1:9/nothing.txt"  # the discard port: connection refused
    with pytest.raises(ConnectionError, match=re.escape(url) + ".*give a local text file as the corpus"):
        TextDataModule(url, cache_dir=str(cache)).prepare_data()
    assert files_under(cache) == []


def test_download_once_with_checksum(http_server, tmp_path):
    base, served, requests = http_server
    write(served / "play.txt", "To be, or not to be: that is the question.\n" * 20)
    digest = hashlib.sha256((served / "play.txt").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    for _ in range(2):
        dm = TextDataModule(f"{base}/play.txt", sha256=digest, block_size=8, cache_dir=str(cache))
        dm.setup("fit")
    assert requests == ["/play.txt"]
    assert dm.tokenizer_path.parent.name.startswith("play-char-")
    assert len([f for f in files_under(cache) if f.startswith("downloads/")]) == 1


def test_checksum_mismatch_keeps_nothing(http_server, tmp_path):
    base, served, _ = http_server
    write(served / "play.txt", "Something is rotten in the state of Denmark.\n" * 10)
    actual = hashlib.sha256((served / "play.txt").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    url = f"{base}/play.txt"
    with pytest.raises(ValueError, match=f"{re.escape(url)} is {actual}, expected {'0' * 64}"):
        TextDataModule(url, sha256="0" * 64, cache_dir=str(cache)).prepare_data()
    assert files_under(cache) == []


def test_missing_url_is_a_connection_error(http_server, tmp_path):
    base, _, _ = http_server
    with pytest.raises(ConnectionError, match="404"):
        TextDataModule(f"{base}/absent.txt", cache_dir=str(tmp_path / "cache")).prepare_data()
    assert files_under(tmp_path / "cache") == []


# --- built-in corpora ---------------------------------------------------------------------------


def test_python_stdlib_text():
    text = python_stdlib_text(max_chars=500_000)
    assert len(text) == 500_000 and "def " in text


def test_shakespeare_text_looks_like_tiny_shakespeare():
    text = shakespeare_text()
    assert len(text) > 4_000_000
    assert re.match(r"[A-Z][A-Za-z' ]*:\n[^\n]+\n", text)
    blocks = text.split("\n\n")
    assert all(re.fullmatch(r"[^\n:]+:\n[^\n]+(\n[^\n]+)*", block) for block in blocks[:-1])
    assert "\nROMEO:\n" in text and "\nFirst Citizen:\n" in text
    assert not set("#*_\\") & set(text)  # no markdown left
    assert text.endswith("\n\n")


def test_the_training_loader_is_resumable_and_reports_a_resume_with_other_seeds(split_corpus, tmp_path):
    from lightning.fabric.utilities.types import _Stateful

    from tzoo.tasks.lm.data import KeyedLoader

    dm = TextDataModule(split_corpus[0], block_size=8, batch_size=2, cache_dir=str(tmp_path / "cache"), seed=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, KeyedLoader) and isinstance(loader, _Stateful)  # Lightning: no "not resumable" warning
    assert not isinstance(dm.val_dataloader(), _Stateful)
    state = loader.state_dict()
    loader.load_state_dict(state)  # the same seeds: silent
    with pytest.warns(UserWarning, match=r"resumed with training batches keyed by \(3, \d+\).*drew them with \(4, \d+\)"):
        loader.load_state_dict({"window_key": [4, state["window_key"][1]]})
