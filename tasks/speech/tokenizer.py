"""Waveforms -> audio-frame nodes, and text -> character ids.

Audio: (B, S) samples -> 80-band log-mel (25 ms windows every 10 ms) normalised per utterance and
band -> SpecAugment (frequency and time masks, training only) -> two convolutions subsampling x4
(both stride 2: 40 ms per node) or x2 (stride 1 then 2, as Whisper: 20 ms per node) -> LayerNorm ->
nodes (B, N, D) and a key-padding mask (B, N) from the true lengths.

Text: the framework's character tokenizer (``tzoo.tasks.text``) over a fixed alphabet, with three
special tokens first: ``<blank>`` (id 0, the CTC blank), ``<s>`` (1, starts decoding) and ``</s>``
(2, ends it).

Shape legend: B batch, S samples, F mel bands, T mel frames, N nodes (T / subsampling), D width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio.transforms as AT
from torch import Tensor, nn

from tzoo.tasks.text import CharTokenizer

__all__ = ["BLANK", "BOS", "EOS", "AudioTokenizer", "LogMel", "WhisperAudioTokenizer", "WhisperLogMel", "slaney_mel_filters", "text_tokenizer"]

BLANK, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = ("<blank>", "<s>", "</s>")


def text_tokenizer(alphabet: str) -> CharTokenizer:
    """Character tokenizer: ids 0-2 are <blank>, <s>, </s>; then the alphabet's characters."""
    if len(set(alphabet)) != len(alphabet) or not alphabet:
        raise ValueError(f"alphabet must be distinct characters (at least one), got {alphabet!r}")
    return CharTokenizer(list(alphabet), special_tokens=SPECIAL_TOKENS)


FORMANT_KNOTS_HZ = (500.0, 1500.0, 2500.0)  # near the first three formants of adult speech


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation per row: x (B, F), knots xp (B, K) non-decreasing, fp (B, K)."""
    right = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.shape[1] - 1)
    x0, x1, f0, f1 = xp.gather(1, right - 1), xp.gather(1, right), fp.gather(1, right - 1), fp.gather(1, right)
    t = ((x - x0) / (x1 - x0).clamp_min(1e-6)).clamp(0, 1)
    return f0 + t * (f1 - f0)


def vtlp_warp(spec: Tensor, alpha: Tensor, sample_rate: int, boundary_hz: float = 4800.0, formants: Tensor | None = None) -> Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton 2013): (B, F, T) power spectra (F linear
    bins up to Nyquist) and (B,) warp factors -> spectra whose frequencies are scaled by alpha.

    A formant at f moves to alpha * f below ``boundary_hz`` * min(alpha, 1); above it a second line
    maps the rest onto the band up to Nyquist, so nothing is pushed out of (or missing from) the
    band. ``formants`` (B, 3): optional extra factors at ``FORMANT_KNOTS_HZ`` (the first three
    formants' regions), so that they move by different amounts (a speaker's formants are not one
    scaling of another's); the warp is piecewise linear between the knots and stays monotone.
    Built by reading each output bin from its (fractional) source bin, linearly interpolated.
    """
    F = spec.shape[1]
    nyquist = sample_rate / 2
    out_hz = torch.linspace(0, nyquist, F, device=spec.device, dtype=torch.float32)[None, :].expand(len(alpha), -1)  # (B, F)
    a = alpha.to(torch.float32)[:, None]  # (B, 1)
    knee = boundary_hz * a.clamp(max=1.0)  # (B, 1): output frequency where the warped axis changes slope
    knots = torch.tensor(FORMANT_KNOTS_HZ, device=spec.device)[None, :]  # (1, K); below every knee / a
    factors = a if formants is None else a * formants.to(torch.float32)  # (B, 1) or (B, K)
    moved = (knots * factors).clamp(max=knee)  # (B, K)
    zero, top = torch.zeros_like(a), torch.full_like(a, nyquist)
    source = torch.cat([zero, knots.expand(len(a), -1), knee / a, top], 1)  # (B, K + 3) Hz in
    target = torch.cat([zero, moved, knee, top], 1).cummax(1).values  # (B, K + 3) Hz out, monotone
    src = (_interp(out_hz, target, source) * ((F - 1) / nyquist)).clamp(0, F - 1)  # (B, F) source bins
    low = src.floor().long().clamp(max=F - 2)
    frac = (src - low)[..., None].to(spec.dtype)  # (B, F, 1)
    index = low[..., None].expand(-1, -1, spec.shape[-1])
    return spec.gather(1, index) * (1 - frac) + spec.gather(1, index + 1) * frac


class LogMel(nn.Module):
    """(B, S) waveforms + (B,) sample counts -> (B, F, T) log-mel, (B,) frame counts.

    Samples past each waveform's length are zeroed first, so what a batch pads with never matters.
    Each utterance is normalised to zero mean and unit variance per band over its real frames
    (robust to the recording level); padded frames are 0.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, *, win_ms: float = 25.0, hop_ms: float = 10.0) -> None:
        super().__init__()
        self.hop = int(sample_rate * hop_ms / 1000)
        win = int(sample_rate * win_ms / 1000)
        n_fft = 1 << (win - 1).bit_length()
        self.mel = AT.MelSpectrogram(sample_rate, n_fft=n_fft, win_length=win, hop_length=self.hop, n_mels=n_mels, center=True)

    def frames(self, lengths: Tensor) -> Tensor:
        return lengths // self.hop + 1  # center=True: one frame per hop, plus one

    def forward(
        self, wave: Tensor, lengths: Tensor, warp: Tensor | None = None, formants: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``warp`` (B,): optional VTLP factors, ``formants`` (B, 3) optional factors per formant
        region (:func:`vtlp_warp`); 1 = none."""
        S = wave.shape[1]
        real = torch.arange(S, device=wave.device)[None, :] < lengths[:, None]  # (B, S)
        wave = wave * real
        # center=True reflects n_fft / 2 samples at each end of the *batch* tensor: an utterance that
        # ends before the batch does would see zeros there, alone it would see its own samples
        # mirrored. Zeros past every utterance's end (as many as a frame reaches) make its features the
        # same alone and in any batch; it also lets a clip shorter than the window through.
        wave = F.pad(wave, (0, self.mel.n_fft // 2))  # (B, S + n_fft / 2)
        spec = self.mel.spectrogram(wave.float())  # (B, n_fft / 2 + 1, T) power
        if warp is not None or formants is not None:
            warp = torch.ones(len(wave), device=wave.device) if warp is None else warp
            spec = vtlp_warp(spec, warp, self.mel.sample_rate, formants=formants)
        mel = self.mel.mel_scale(spec).clamp_min(1e-6).log()[..., : S // self.hop + 1]  # (B, F, T): the frames of S samples
        frames = self.frames(lengths)
        valid = (torch.arange(mel.shape[-1], device=wave.device)[None, :] < frames[:, None])[:, None, :]  # (B, 1, T)
        count = frames[:, None, None].clamp_min(1)
        mean = (mel * valid).sum(-1, keepdim=True) / count  # (B, F, 1)
        var = (((mel - mean) * valid) ** 2).sum(-1, keepdim=True) / count
        return ((mel - mean) / (var + 1e-5).sqrt()) * valid, frames


class AudioTokenizer(nn.Module):
    """(B, S) waveforms + (B,) lengths -> nodes (B, N, D), key-padding mask (B, N) (True = real).

    ``freq_masks`` masks of up to ``freq_mask_width`` bands and ``time_masks`` masks of up to
    ``time_mask_width`` frames (each at most ``time_mask_ratio`` of the utterance) are applied in
    training only (SpecAugment, Park et al. 2019); ``freq_warp`` w > 0 also scales each training
    utterance's frequencies by a factor drawn from [1 - w, 1 + w] (VTLP, :func:`vtlp_warp`: other
    vocal tract lengths, i.e. other speakers' formants); ``formant_warp`` v > 0 moves the regions of
    the first three formants each by its own factor from [1 - v, 1 + v] on top of that (a speaker's
    formants are not one scaling of another's). ``subsampling`` (4 or 2): mel frames per node.
    Character CTC needs a node per character and one between doubled letters: at x4 (25 nodes/s)
    fast speech (~20 characters/s) leaves it little room; x2 doubles the nodes and the encoder's cost.
    """

    def __init__(
        self,
        dim: int,
        *,
        sample_rate: int = 16000,
        n_mels: int = 80,
        freq_masks: int = 2,
        freq_mask_width: int = 15,
        time_masks: int = 2,
        time_mask_width: int = 25,
        time_mask_ratio: float = 0.1,
        subsampling: int = 4,
        freq_warp: float = 0.0,
        formant_warp: float = 0.0,
    ) -> None:
        super().__init__()
        if subsampling not in (2, 4):
            raise ValueError(f"subsampling={subsampling!r} is not one of (2, 4) (mel frames per node)")
        if not 0.0 <= freq_warp < 0.5:
            raise ValueError(f"freq_warp must be in [0, 0.5) (the largest relative VTLP warp; 0 = off), got {freq_warp}")
        if not 0.0 <= formant_warp < 0.5:
            raise ValueError(f"formant_warp must be in [0, 0.5) (the largest relative shift of a formant region; 0 = off), got {formant_warp}")
        self.freq_warp, self.formant_warp = freq_warp, formant_warp
        self.logmel = LogMel(sample_rate, n_mels)
        self.freq_masks = nn.ModuleList(AT.FrequencyMasking(freq_mask_width, iid_masks=True) for _ in range(freq_masks))
        self.time_masks = nn.ModuleList(
            AT.TimeMasking(time_mask_width, iid_masks=True, p=time_mask_ratio) for _ in range(time_masks)
        )
        # x4 in time: 10 ms frames -> 40 ms nodes (x2: 20 ms nodes)
        self.subsampling = subsampling
        self.stride1 = 2 if subsampling == 4 else 1
        self.node_seconds = subsampling * self.logmel.hop / sample_rate
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, stride=self.stride1, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.act = nn.GELU()
        # unit-scale nodes: at initialisation the convolutions' output is ~0.2 per channel, which
        # positional encodings added next (~0.7) would drown
        self.norm = nn.LayerNorm(dim)

    def subsampled(self, frames: Tensor) -> Tensor:
        """Node counts after the two convolutions (kernel 3, padding 1; the second stride 2)."""
        return ((frames - 1) // self.stride1 + 1 - 1) // 2 + 1

    def num_nodes(self, num_samples: int) -> int:
        return int(self.subsampled(self.logmel.frames(torch.tensor(num_samples))))

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        warp = formants = None
        if self.training and self.freq_warp > 0:
            warp = 1 + (torch.rand(wave.shape[0], device=wave.device) * 2 - 1) * self.freq_warp  # (B,)
        if self.training and self.formant_warp > 0:
            formants = 1 + (torch.rand(wave.shape[0], len(FORMANT_KNOTS_HZ), device=wave.device) * 2 - 1) * self.formant_warp
        mel, frames = self.logmel(wave, lengths, warp, formants)  # (B, F, T), (B,)
        return self.from_logmel(mel, frames)

    def from_logmel(self, mel: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        if self.training:
            for mask in self.freq_masks:
                mel = mask(mel)
            for mask in self.time_masks:
                mel = mask(mel)
        valid = torch.arange(mel.shape[-1], device=mel.device)[None, :] < frames[:, None]  # (B, T)
        x = self.act(self.conv1(mel * valid[:, None]))  # (B, D, T / stride1)
        first = (frames - 1) // self.stride1 + 1
        x = x * (torch.arange(x.shape[-1], device=x.device)[None, :] < first[:, None])[:, None]  # padding stays 0
        x = self.act(self.conv2(x))  # (B, D, N)
        nodes = self.subsampled(frames)
        mask = torch.arange(x.shape[-1], device=x.device)[None, :] < nodes[:, None]  # (B, N)
        return self.norm(x.transpose(1, 2)), mask  # (B, N, D)


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_max: float | None = None) -> Tensor:
    """Triangular mel filters on the Slaney mel scale (linear below 1 kHz, logarithmic above), each
    normalised to unit area (Slaney's "norm"): (n_fft / 2 + 1, F). Computed in float64, as
    librosa and Whisper's filters are."""
    f_max = sample_rate / 2 if f_max is None else f_max
    linear, log_start, log_step = 200.0 / 3, 1000.0, math.log(6.4) / 27.0  # 15 mels up to 1 kHz, then 27 per 6.4x

    def to_mel(hz: Tensor) -> Tensor:
        return torch.where(hz < log_start, hz / linear, log_start / linear + torch.log(hz.clamp_min(1e-10) / log_start) / log_step)

    def to_hz(mel: Tensor) -> Tensor:
        return torch.where(mel < log_start / linear, mel * linear, log_start * torch.exp(log_step * (mel - log_start / linear)))

    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (n_fft / 2 + 1,)
    edges = to_hz(torch.linspace(0.0, float(to_mel(torch.tensor(f_max, dtype=torch.float64))), n_mels + 2, dtype=torch.float64))
    rising = (bins[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])  # (bins, F)
    falling = (edges[None, 2:] - bins[:, None]) / (edges[2:] - edges[1:-1])
    filters = torch.minimum(rising, falling).clamp_min(0)
    return filters * (2.0 / (edges[2:] - edges[:-2]))  # unit area per filter


class WhisperLogMel(nn.Module):
    """Whisper's features: (B, S) waveforms + (B,) sample counts -> (B, F, T) log-mel, (B,) frame
    counts, every utterance zero-padded to ``num_samples`` (T = num_samples / hop; 30 s, 3000 frames,
    in Whisper's released models).

    A 400-sample Hann-windowed STFT every 160 samples (25 ms / 10 ms at 16 kHz), the power spectrum
    without its last frame, F Slaney mel filters up to 8 kHz, log10 (floored at 1e-10), each
    utterance clamped to at most 8 below its own maximum, then (x + 4) / 4. Whisper's models see
    the padded silence, so every one of the T frames counts as real."""

    def __init__(self, num_samples: int, *, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400, hop: int = 160) -> None:
        super().__init__()
        self.num_samples, self.n_fft, self.hop = num_samples, n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        filters = slaney_mel_filters(sample_rate, n_fft, n_mels, f_max=min(8000.0, sample_rate / 2))
        self.register_buffer("filters", filters.T.float().contiguous(), persistent=False)  # (F, n_fft / 2 + 1)

    def frames(self, lengths: Tensor) -> Tensor:
        return torch.full_like(lengths, self.num_samples // self.hop)  # padded to the same length: all real

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        longest = int(lengths.max()) if len(lengths) else 0
        if longest > self.num_samples:
            raise ValueError(
                f"audio of {longest} samples is longer than the Whisper front end's {self.num_samples} samples "
                f"(net.max_frames nodes); split it into shorter pieces (it is not chunked automatically)"
            )
        wave = wave[:, : self.num_samples].float()
        wave = wave * (torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None])  # zero past each end
        wave = F.pad(wave, (0, self.num_samples - wave.shape[1]))  # (B, num_samples)
        with torch.autocast(wave.device.type, enabled=False):  # fp32 features under mixed precision too, as Whisper's
            spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True)
            power = spec[..., :-1].abs() ** 2  # (B, n_fft / 2 + 1, T)
            log = (self.filters @ power).clamp_min(1e-10).log10()  # (B, F, T)
        log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log + 4.0) / 4.0, self.frames(lengths)


class WhisperAudioTokenizer(nn.Module):
    """Whisper's front end: (B, S) waveforms + (B,) lengths -> nodes (B, N, D), mask (B, N) (all
    True: Whisper attends to its padding). ``WhisperLogMel`` over ``num_nodes`` x 2 frames, then two
    convolutions (kernel 3; stride 1, then 2: 20 ms per node), each followed by exact GELU, and no
    norm. SpecAugment masks as in ``AudioTokenizer``, in training only."""

    def __init__(self, dim: int, num_nodes: int, *, sample_rate: int = 16000, n_mels: int = 80, freq_masks: int = 0, time_masks: int = 0) -> None:
        super().__init__()
        self.logmel = WhisperLogMel(2 * num_nodes * 160, sample_rate=sample_rate, n_mels=n_mels)
        self.node_seconds = 2 * self.logmel.hop / sample_rate
        self.freq_masks = nn.ModuleList(AT.FrequencyMasking(15, iid_masks=True) for _ in range(freq_masks))
        self.time_masks = nn.ModuleList(AT.TimeMasking(25, iid_masks=True, p=0.1) for _ in range(time_masks))
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)

    def subsampled(self, frames: Tensor) -> Tensor:
        return (frames - 1) // 2 + 1

    def num_nodes(self, num_samples: int) -> int:
        return int(self.subsampled(self.logmel.frames(torch.tensor(num_samples))))

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.from_logmel(*self.logmel(wave, lengths))

    def from_logmel(self, mel: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, F, T) Whisper log-mel (``input_features``) -> nodes (B, T / 2, D), mask (B, T / 2)."""
        if self.training:
            for mask in (*self.freq_masks, *self.time_masks):
                mel = mask(mel)
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel))))  # (B, D, N)
        return x.transpose(1, 2), torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
