"""Sample text from a language-model checkpoint (what `tzoo generate` does), with and without the
KV cache, and time both.

    python examples/generate_text.py runs/lm/version_0/checkpoints/last.ckpt --prompt "ROMEO:"
"""

import argparse
import time

from tzoo.tasks.loading import load_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU, else MPS, else the CPU), cpu, cuda or mps")
    args = parser.parse_args()

    lm = load_module(args.checkpoint, task="lm", device=args.device)  # weights_only loading; the tokenizer is inside
    for use_cache in (True, False):
        start = time.perf_counter()
        text = lm.sample(args.prompt, max_new_tokens=args.tokens, temperature=0.8, top_k=50, seed=0, use_cache=use_cache)
        seconds = time.perf_counter() - start
        print(f"--- use_cache={use_cache}: {args.tokens / seconds:.0f} tokens/s ---\n{text}\n")


if __name__ == "__main__":
    main()
