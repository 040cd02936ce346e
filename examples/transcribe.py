"""Transcribe audio files with a trained speech checkpoint and draw the alignment of the first one:
its log-mel spectrogram above the decoder's cross-attention (which audio frames each output
character looked at).

    python benchmarks/speech.py            # or: tzoo fit --config configs/speech/espeak.yaml
    python examples/transcribe.py runs/speech/version_0/checkpoints/last.ckpt recording.wav \\
        --out examples/speech_alignment.png

Any sample rate and channel count is accepted (resampled to the model's rate, downmixed to mono).
``--method`` picks beam search (default), attention greedy or CTC greedy decoding. ``--one_speaker``
says that every file is the same speaker: a checkpoint that searches frequency warps
(``warp_search``) then pools the search over the files (``warp_search_by="speaker"``, vtln.py) instead
of choosing a warp for each file alone.
"""

import argparse

import torch

from tzoo.tasks.loading import load_module
from tzoo.tasks.speech.audio import load_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("audio", nargs="+", help="WAV / FLAC / OGG files")
    parser.add_argument("--method", choices=("beam", "greedy", "ctc"), default="beam")
    parser.add_argument("--reference", default="", help="the first file's true transcript, shown in the figure")
    parser.add_argument("--out", default="speech_alignment.png", help="alignment figure of the first file (PNG)")
    parser.add_argument("--one_speaker", action="store_true", help="every file is the same speaker: one frequency warp for all (warp_search)")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU, else MPS, else the CPU), cpu, cuda or mps")
    args = parser.parse_args()

    module = load_module(args.checkpoint, task="speech", device=args.device)  # weights-only loading
    rate = module.model.sample_rate
    waves = [load_audio(name, rate).to(module.device) for name in args.audio]
    with torch.inference_mode():
        if args.one_speaker and module.warp_search is not None:  # every file votes, then all decode at the choice
            module.warp_search_by = "speaker"
            for wave in waves:
                module.encode(wave[None], torch.tensor([len(wave)], device=module.device), ["one"])
            module.warp_search = (module.warp_search[module.speaker_warps.best("one")],)
            print(f"frequency warp of the speaker: {module.warp_search[0]}")
        for name, wave in zip(args.audio, waves):
            (text,) = module.transcribe(wave[None], torch.tensor([len(wave)], device=module.device), method=args.method)
            print(f"{name} ({len(wave) / rate:.2f} s): {text}")
    path = module.draw_alignment(load_audio(args.audio[0], rate).to(module.device), args.out, reference=args.reference)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
