"""A tiny generated corpus shared by the speech tests (a few seconds to make; every engine installed)."""

import pytest

from tzoo.tasks.speech.corpus import CorpusSpec, generate_corpus

TINY_SPEC = dict(train=6, val=3, test=3, test_sentences=2, max_words=3, seed=0)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Folder with {train,val,test,test_sentences}.jsonl and their WAV files."""
    return generate_corpus(tmp_path_factory.mktemp("speech_corpus"), CorpusSpec(**TINY_SPEC))
