"""Shallow fusion (``fusion.py``): the scorer against the GPT's own full forward (with beam reorders,
and past its block), the fused beam against a hand loop (and, joint with CTC, against a hand loop of
its pre-beam and score with prefix scores from every alignment listed), a trained LM steering an untrained
decoder, the LM's training text, and bad input named."""

from pathlib import Path

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.lm.model import GPT, GPTConfig
from tzoo.tasks.loading import load_module
from tzoo.tasks.speech.corpus import WORDS
from tzoo.tasks.speech.decoding import beam_search
from tzoo.tasks.speech.fusion import LanguageModelScorer, training_text
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
from tzoo.tasks.speech.module import SpeechRecognizer
from tzoo.tasks.speech.sentences import play_sentences
from tzoo.tasks.speech.tokenizer import BLANK, BOS, EOS, text_tokenizer
from tzoo.tasks.text import CharTokenizer

ROOT = Path(__file__).resolve().parents[3]
ALPHABET = " abcdefgh"
SPEECH = text_tokenizer(ALPHABET)
LM_TOKENS = CharTokenizer.from_text("\nhgfedcba xyz")  # another order, and characters speech lacks


def _gpt(block_size=64, seed=0):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=LM_TOKENS.vocab_size, block_size=block_size, position="none",
                       transformer=TransformerConfig(dim=32, depth=2, num_heads=2, position="rope"))  # fmt: skip
    return GPT(config).eval()


def _full(gpt, text):
    """log P_lm(next | "\\n" + text) over the LM's vocabulary, from one full forward."""
    ids = torch.tensor([LM_TOKENS.encode("\n" + text)])
    return gpt(ids)[0, -1].log_softmax(-1)


def _expected(gpt, text):
    """The same in the speech vocabulary: each character's LM log-probability, </s> the end of line."""
    full = _full(gpt, text)
    out = torch.full((SPEECH.vocab_size,), float("-inf"))
    for char in ALPHABET:
        out[SPEECH.encode(char)[0]] = full[LM_TOKENS.encode(char)[0]]
    out[EOS] = full[LM_TOKENS.encode("\n")[0]]
    return out


def test_the_scorer_gives_the_full_forward_s_log_probabilities_through_beam_reorders():
    gpt = _gpt()
    scorer = LanguageModelScorer(gpt, LM_TOKENS, SPEECH)
    first = scorer.start()
    torch.testing.assert_close(first[0], _expected(gpt, ""), rtol=0, atol=1e-5)
    assert first[0, BLANK] == float("-inf") and first[0, BOS] == float("-inf")
    texts = [""]
    # step 1: one row -> three; step 2: rows reordered and one dropped; step 3: a row duplicated
    for rows, chars in (([0, 0, 0], "bad"), ([2, 0], "a "), ([1, 1, 0], "hcg"), ([0, 1], "ab"), ([0, 1], "ef")):
        texts = [texts[r] + c for r, c in zip(rows, chars)]
        got = scorer.advance(torch.tensor(rows), torch.tensor([SPEECH.encode(c)[0] for c in chars]))
        for row, text in enumerate(texts):
            torch.testing.assert_close(got[row], _expected(gpt, text), rtol=0, atol=1e-5)


def test_past_its_block_the_scorer_reads_the_last_half_block_afresh():
    gpt = _gpt(block_size=8)
    scorer = LanguageModelScorer(gpt, LM_TOKENS, SPEECH)
    scorer.start()
    text = "abcdefgh ab"
    for char in text:
        got = scorer.advance(torch.tensor([0]), torch.tensor([SPEECH.encode(char)[0]]))
    # "\n" + 11 characters: the cache was full (8 tokens) when "h" came, so the scorer read the last
    # half block "efgh" into a fresh cache, and " ab" went through that cache
    want = gpt(torch.tensor([LM_TOKENS.encode("efgh ab")]))[0, -1].log_softmax(-1)
    sliding = gpt(torch.tensor([LM_TOKENS.encode("defgh ab")]))[0, -1].log_softmax(-1)
    assert not torch.allclose(want, sliding, atol=1e-3)  # not the last block's worth, slid along
    for char in ALPHABET:
        torch.testing.assert_close(got[0, SPEECH.encode(char)[0]], want[LM_TOKENS.encode(char)[0]], rtol=0, atol=1e-5)


def _speech_model():
    torch.manual_seed(0)
    stack = dict(dim=32, depth=2, num_heads=2, dropout=0.0)
    config = SpeechConfig(alphabet=ALPHABET, encoder=TransformerConfig(**stack), decoder=TransformerConfig(**stack, position="rope"))
    return SpeechTransformer(config).eval()


@torch.inference_mode()
def test_a_fused_beam_of_one_is_the_greedy_choice_of_decoder_plus_weighted_lm():
    model, gpt = _speech_model(), _gpt()
    encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    weight = 0.8
    scorer = LanguageModelScorer(gpt, LM_TOKENS, SPEECH)
    got = beam_search(model, encoded, beam=1, max_len=12, lm=scorer, lm_weight=weight)
    ids = [BOS]
    for _ in range(12):  # by hand, no caches: argmax of log P_dec + w log P_lm
        dec = model.decode(torch.tensor([ids]), encoded, None)[0, -1].log_softmax(-1)
        lm = _expected(gpt, SPEECH.decode(ids[1:]))
        nxt = int((dec + weight * lm).argmax())
        if nxt == EOS:
            break
        ids.append(nxt)
    assert got == ids[1:]
    assert beam_search(model, encoded, beam=3, max_len=12, lm=scorer, lm_weight=0.0) == beam_search(model, encoded, beam=3, max_len=12)


def _brute_force_prefix_scores(ctc_logp):
    """log P_ctc(the transcript starts with g) for every g, and log P_ctc(transcript == g), by
    enumerating every alignment of the (N, V) frames (N small): independent of CTCPrefixScorer."""
    import itertools
    import math

    N, V = ctc_logp.shape
    starts, exact = {}, {}
    for path in itertools.product(range(V), repeat=N):
        logp = sum(float(ctc_logp[t, c]) for t, c in enumerate(path))
        out = tuple(c for i, c in enumerate(path) if c != BLANK and (i == 0 or c != path[i - 1]))
        exact[out] = exact.get(out, 0.0) + math.exp(logp)
        for k in range(len(out) + 1):
            starts[out[:k]] = starts.get(out[:k], 0.0) + math.exp(logp)
    log = lambda table, key: math.log(table[key]) if table.get(key, 0.0) > 0 else float("-inf")  # noqa: E731
    return (lambda g: log(starts, tuple(g))), (lambda g: log(exact, tuple(g)))


@torch.inference_mode()
def test_a_joint_ctc_and_lm_beam_of_one_is_the_hand_choice_of_its_pre_beam_and_score():
    # beam 1, pre-beam 3: each step CTC-scores the 3 tokens ranked best by (1 - w) log P_dec + b log P_lm,
    # then keeps the one with the best (1 - w) log P_dec(h) + w log P_ctc(h...) + b log P_lm(h)
    model, gpt = _speech_model(), _gpt()
    encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    torch.manual_seed(3)
    ctc = torch.randn(4, SPEECH.vocab_size, dtype=torch.float64) * 3  # 4 frames: every alignment can be listed
    ctc[:, BLANK] += 2.0
    ctc_logp = ctc.log_softmax(-1)
    starts, exact = _brute_force_prefix_scores(ctc_logp)
    w, b, pre = 0.4, 0.6, 3
    scorer = LanguageModelScorer(gpt, LM_TOKENS, SPEECH)
    got = beam_search(model, encoded, beam=1, max_len=6, ctc_logits=ctc.float(), ctc_weight=w, pre_beam=pre, lm=scorer, lm_weight=b)
    ids, att, lm_sum, chosen = [BOS], 0.0, 0.0, None
    for _ in range(6):  # by hand, no caches
        dec = model.decode(torch.tensor([ids]), encoded, None)[0, -1].float().log_softmax(-1)
        lm = _expected(gpt, SPEECH.decode(ids[1:]))
        ranked = (1 - w) * dec + b * lm
        best = None
        for c in ranked.topk(pre).indices.tolist():
            prefix = ids[1:] + ([] if c == EOS else [c])
            psi = exact(prefix) if c == EOS else starts(prefix)
            score = (1 - w) * (att + float(dec[c])) + w * psi + b * (lm_sum + float(lm[c]))
            if best is None or score > best[0]:
                best = (score, c)
        chosen = best[1]
        if chosen == EOS:
            break
        att, lm_sum = att + float(dec[chosen]), lm_sum + float(lm[chosen])
        ids.append(chosen)
    assert chosen == EOS, "the hand loop should end within the 4 frames' transcripts"
    assert len(ids) > 2, ids  # a transcript of a few tokens, so the steps are compared, not only the end
    assert got == ids[1:]


def test_a_trained_lm_steers_an_untrained_decoder_to_its_sentence():
    torch.manual_seed(0)
    gpt = _gpt(block_size=32).train()
    ids = torch.tensor(LM_TOKENS.encode("\nbad cab\n" * 8))
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-2)
    for _ in range(150):  # memorise "bad cab" as the only line
        loss = torch.nn.functional.cross_entropy(gpt(ids[None, :32]).flatten(0, 1), ids[1:33])
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    gpt.eval()
    model = _speech_model()
    encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    scorer = LanguageModelScorer(gpt, LM_TOKENS, SPEECH)
    free = SPEECH.decode(beam_search(model, encoded, beam=3, max_len=12))
    fused = SPEECH.decode(beam_search(model, encoded, beam=3, max_len=12, lm=scorer, lm_weight=5.0))
    assert free != "bad cab" and fused == "bad cab", (free, fused)


def test_the_training_text_holds_the_training_plays_and_random_word_lines_but_no_test_play_line(tmp_path):
    path = training_text(tmp_path / "lm" / "text.txt", random_lines=500, seed=1)
    lines = path.read_text().splitlines()
    train, test = set(play_sentences("train", 1, 10_000)), set(play_sentences("test", 1, 10_000))
    assert len(lines) == len(train) + 500 and train <= set(lines)
    # no test play's line, but for lines of the word list's words alone (a random sequence may be one: "come")
    spoken = {line for line in test if not set(line.split()) <= set(WORDS)}
    assert len(spoken) > 0.9 * len(test) and not spoken & set(lines)
    assert lines != sorted(lines, key=lambda line: line in train)  # shuffled, not plays then words
    assert set("".join(lines)) <= set(" '0123456789abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(ValueError, match="random_lines must be >= 0, got -1"):
        training_text(tmp_path / "x.txt", random_lines=-1)


def test_bad_language_models_and_weights_are_named():
    with pytest.raises(ValueError, match=r"the language model's vocabulary lacks \['h', '\\n'\]: it must hold every character of the speech alphabet ' abcdefgh'"):
        LanguageModelScorer(_gpt(), CharTokenizer.from_text("abcdefg xyz"), SPEECH)
    scorer = LanguageModelScorer(_gpt(), LM_TOKENS, SPEECH)
    with pytest.raises(RuntimeError, match=r"advance before start\(\)"):
        scorer.advance(torch.tensor([0]), torch.tensor([5]))
    scorer.start()
    with pytest.raises(ValueError, match=r"advance takes written characters, not <blank>, <s> or </s>: got \[4, 2\]"):
        scorer.advance(torch.tensor([0, 0]), torch.tensor([4, EOS]))
    model = _speech_model()
    encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    for weight in (-0.5, float("nan")):
        with pytest.raises(ValueError, match=r"lm_weight must be a finite number >= 0 \(the language model's share; 0: none\), got"):
            beam_search(model, encoded, lm=scorer, lm_weight=weight)
    with pytest.raises(ValueError, match=r"lm_weight=0.3 needs a language model: set lm to an lm-task checkpoint"):
        SpeechRecognizer(lm_weight=0.3)
    with pytest.raises(ValueError, match=r"lm_weight must be a finite number >= 0 \(the language model's weight in the beam\), got -1"):
        SpeechRecognizer(lm_weight=-1)
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        SpeechRecognizer(lm="nothing.ckpt", lm_weight=0.3)
    with pytest.raises(ValueError, match=r"lm='lm.ckpt' scores the character beam; a Whisper model writes BPE tokens greedily: set lm=None"):
        SpeechRecognizer(pretrained="whisper-folder", lm="lm.ckpt", ctc_weight=0, beam_ctc_weight=0)


def test_the_speech_module_decodes_with_an_lm_task_checkpoint(tmp_path):
    from tzoo.tasks.cli import main

    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog's back\n0 1 2 3 4 5 6 7 8 9\n" * 40)
    main(["fit", "--config", str(ROOT / "configs" / "lm" / "speech_fusion.yaml"), f"--data.init_args.corpus={corpus}",
          f"--data.init_args.cache_dir={tmp_path / 'cache'}", f"--trainer.default_root_dir={tmp_path / 'runs'}",
          "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
          "--model.init_args.sample_tokens=0", "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
          "--model.init_args.net.transformer.num_heads=2", "--model.init_args.net.block_size=8", "--data.init_args.block_size=8",
          "--data.init_args.batch_size=2"])  # fmt: skip
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    stack = {"dim": 16, "depth": 1, "num_heads": 2}
    module = SpeechRecognizer({"encoder": stack, "decoder": stack}, lm=str(ckpt), lm_weight=0.5, beam_size=2, max_text_len=20).eval()
    assert module.lm is not None and module.lm.block_size == 8
    assert "lm" not in "".join(module.state_dict())  # not a submodule: the speech checkpoint does not hold it
    torch.manual_seed(0)
    (text,) = module.transcribe(torch.randn(1, 8000), torch.tensor([8000]))  # 20 characters: past the LM's block
    assert isinstance(text, str) and len(text) <= 20
    assert module.lm.history.shape[1] > 8  # the beam went on past the LM's block: it read the last half afresh
    with pytest.raises(ValueError, match="was written by the 'lm' task, not by 'speech'"):
        load_module(ckpt, task="speech")


def test_a_language_model_with_a_bpe_tokenizer_is_refused(monkeypatch):
    from types import SimpleNamespace

    import tzoo.tasks.loading
    from tzoo.tasks.text import BPETokenizer

    bpe = BPETokenizer.train("the quick brown fox jumps over the lazy dog\n" * 20, vocab_size=270)
    monkeypatch.setattr(tzoo.tasks.loading, "load_module", lambda path, **kwargs: SimpleNamespace(model=_gpt(), tokenizer=bpe))
    with pytest.raises(ValueError, match=r"language model 'bpe.ckpt' has a BPETokenizer; shallow fusion needs a character tokenizer \(data.init_args.tokenizer: char\)"):
        LanguageModelScorer.load("bpe.ckpt", SPEECH)
