"""Test-time vocal tract length normalisation: each utterance decoded at the frequency warp its
model is surest of.

A voice the model never heard has formants where no training voice had them. VTLN (Lee & Rose
1998; Eide & Gish 1996) scales the spectrum's frequency axis by a factor alpha per speaker so that
the voice looks like the training voices. ``warp_search`` computes the features at each of a few
alphas (``tokenizer.vtlp_warp``, the warp the model trained with as augmentation), runs the encoder
on all of them in one batch, and keeps per utterance the encoding whose CTC best path is the most
probable per audio node (the mean over the real nodes of the largest log-probability): the choice
reads the audio alone. Everything after it (beam, greedy, CTC) decodes that encoding.

VTLN as Lee & Rose defined it chooses one alpha per speaker, from all of the speaker's speech: one
utterance's confidence is a noisy vote. ``SpeakerWarps`` pools the votes: each speaker's confidence
at every alpha, averaged over the audio nodes of that speaker's utterances decoded so far (the
current one included), and every utterance of a speaker is decoded at the pooled choice (one pass:
the first utterances of a speaker decide on less evidence than the later ones). Utterances whose
speaker is not known (None) choose alone.

The cost is one encoder pass per alpha (batched), no extra decoding. Measured in docs/speech.md
("Test-time frequency warping"): on run W's checkpoint, the unseen Festival HTS voice 25.16 ->
21.37% test CER with the joint beam, alphas 0.88 ... 1.12; per speaker, on run Z's, 22.26 -> 19.66%.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["SCOPES", "SpeakerWarps", "check_alphas", "check_scope", "ctc_confidence", "warp_search", "warped_encodings"]

ALPHA_RANGE = (0.5, 1.5)  # vtlp_warp's factors (the training warp's: 1 +- freq_warp < 0.5)
SCOPES = ("utterance", "speaker")  # what one warp is chosen for (``warp_search_by``)


def check_alphas(alphas: Sequence[float], net: Any = None) -> tuple[float, ...]:
    """``alphas`` as a tuple of floats, or ValueError naming what is wrong; with ``net`` (a
    ``SpeechConfig``) also that its model can search: a CTC head and the log-mel front end."""
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Sequence) or not alphas:
        raise ValueError(f"warp_search must be a non-empty list of frequency warp factors (e.g. [0.88, 0.94, 1.0, 1.06, 1.12]), or None, got {alphas!r}")
    low, high = ALPHA_RANGE
    bad = [a for a in alphas if isinstance(a, bool) or not (isinstance(a, (int, float)) and math.isfinite(a) and low < a < high)]
    if bad:
        raise ValueError(f"warp_search factors must be numbers in ({low}, {high}) (1 = no warp), got {bad} in {list(alphas)}")
    checked = tuple(float(a) for a in alphas)
    if net is not None and net.frontend != "tzoo":
        raise ValueError(f"warp_search={list(checked)} warps the log-mel of net.frontend='tzoo'; net.frontend={net.frontend!r} takes no warp: set warp_search=None")
    if net is not None and not net.ctc:
        raise ValueError(f"warp_search={list(checked)} chooses a warp by the CTC head's confidence; this model has no CTC head (net.ctc=False): set warp_search=None")
    return checked


def check_scope(scope: str, alphas: Sequence[float] | None) -> str:
    """``scope`` if it is one of ``SCOPES`` and there is a search to scope, else ValueError."""
    if scope not in SCOPES:
        raise ValueError(f"warp_search_by must be one of {SCOPES} (what one frequency warp is chosen for), got {scope!r}")
    if scope == "speaker" and alphas is None:
        raise ValueError("warp_search_by='speaker' pools the warp search over each speaker's utterances; warp_search=None searches "
                         "nothing: give warp_search factors (e.g. [0.88, 0.94, 1.0, 1.06, 1.12]) or set warp_search_by='utterance'")
    return scope


class SpeakerWarps:
    """Each speaker's CTC confidence at every alpha, pooled over the audio nodes of the utterances
    seen so far; ``choose`` adds a batch's and returns each utterance's alpha index."""

    def __init__(self) -> None:
        self.totals: dict[str, Tensor] = {}  # speaker -> (A,) confidence x nodes, summed (its argmax: the node-weighted mean's)

    def reset(self) -> None:
        self.totals = {}

    def choose(self, confidence: Tensor, nodes: Tensor, speakers: Sequence[str | None]) -> Tensor:
        """(B, A) mean best-path log-probabilities, (B,) real nodes, B speakers (None: unknown) ->
        (B,) the alpha index of the highest pooled confidence of each utterance's speaker (its own
        for an unknown speaker). Every utterance of the batch is pooled before any is chosen."""
        if len(speakers) != confidence.shape[0]:
            raise ValueError(f"speakers must name one speaker (or None) per utterance: {confidence.shape[0]} utterances, {len(speakers)} speakers")
        confidence, nodes = confidence.detach().float().cpu(), nodes.detach().float().cpu()
        for speaker, c, n in zip(speakers, confidence, nodes):
            if speaker is not None:
                self.totals[speaker] = self.totals.get(speaker, torch.zeros_like(c)) + c * n
        return torch.tensor([int(c.argmax()) if s is None else self.best(s) for s, c in zip(speakers, confidence)])

    def best(self, speaker: str) -> int:
        """The alpha index of ``speaker``'s highest pooled confidence so far (KeyError: not seen)."""
        if speaker not in self.totals:
            raise KeyError(f"speaker {speaker!r} has no utterances pooled yet; pooled: {sorted(self.totals)}")
        return int(self.totals[speaker].argmax())


def warped_encodings(model: Any, wave: Tensor, lengths: Tensor, alphas: Sequence[float]) -> tuple[Tensor, Tensor, Tensor]:
    """(B, S) samples, (B,) lengths -> at every alpha, utterance-major (row b * A + a: utterance b
    at ``alphas[a]``): the encoder's output (B * A, N, D), its mask (B * A, N) and the CTC head's
    logits (B * A, N, V), in one batch."""
    A = len(alphas)
    warp = torch.tensor(alphas, dtype=torch.float32, device=wave.device).repeat(wave.shape[0])  # (B * A,)
    mel, frames = model.frontend.logmel(wave.repeat_interleave(A, 0), lengths.repeat_interleave(A), warp, None)
    encoded, mask = model.encode_nodes(*model.frontend.from_logmel(mel, frames))
    return encoded, mask, model.ctc_head(encoded)


def ctc_confidence(ctc_logits: Tensor, mask: Tensor) -> Tensor:
    """CTC logits (R, N, V) and mask (R, N) -> (R,) the mean over the real nodes of the best path's
    log-probability: how sure the CTC head is of what it hears."""
    best = ctc_logits.float().log_softmax(-1).max(-1).values  # (R, N)
    return (best * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def warp_search(
    model: Any, wave: Tensor, lengths: Tensor, alphas: Sequence[float], *, speakers: Sequence[str | None] | None = None, pool: SpeakerWarps | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """(B, S) samples, (B,) lengths -> the encoder's output (B, N, D) and mask (B, N) at each
    utterance's chosen alpha, and the chosen alphas (B,). ``model``: a ``SpeechTransformer`` with a
    CTC head and the log-mel front end (its frontend's ``logmel`` takes the warp). With ``pool``
    and ``speakers`` (one per utterance, None: unknown), the choice is the speaker's (``SpeakerWarps``)."""
    B, A = wave.shape[0], len(alphas)
    encoded, mask, ctc = warped_encodings(model, wave, lengths, alphas)
    confidence = ctc_confidence(ctc, mask).view(B, A)
    if pool is not None and speakers is not None:
        chosen = pool.choose(confidence, mask.view(B, A, -1)[:, 0].sum(-1), speakers).to(wave.device)
    else:
        chosen = confidence.argmax(-1)  # (B,)
    rows = torch.arange(B, device=wave.device) * A + chosen
    return encoded[rows], mask[rows], torch.tensor(alphas, device=wave.device)[chosen]
