"""A model built from tzoo.core blocks directly, without Lightning: a tiny encoder-decoder that
learns to reverse sequences of digits, trained in a plain PyTorch loop, then decoded greedily
with the KV cache.

    python examples/core_blocks.py
"""

import torch
import torch.nn.functional as F
from torch import nn

from tzoo.core import Decoder, Encoder, LearnedPositionalEmbedding, TransformerConfig

VOCAB, LENGTH, START = 10, 8, 10  # digits 0-9, a start token for the decoder


class Reverser(nn.Module):
    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        cfg = TransformerConfig(dim=dim, depth=2, num_heads=4)
        self.embed = nn.Embedding(VOCAB + 1, dim)
        self.src_pos = LearnedPositionalEmbedding(LENGTH, dim)
        self.tgt_pos = LearnedPositionalEmbedding(LENGTH, dim)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross_attention=True)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(self.src_pos(self.embed(src)))  # (B, N, D): every digit sees every digit
        return self.head(self.decoder(self.tgt_pos(self.embed(tgt_in)), encoded))  # (B, N, V), causal

    @torch.inference_mode()
    def reverse(self, src: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(self.src_pos(self.embed(src)))
        cache, cross = self.decoder.make_cache(LENGTH), self.decoder.make_cache()
        token = torch.full((src.shape[0], 1), START)
        out = []
        for t in range(LENGTH):
            h = self.decoder(self.tgt_pos(self.embed(token), offset=t), encoded, cache=cache, cross_cache=cross)
            token = self.head(h).argmax(-1)  # (B, 1)
            out.append(token)
        return torch.cat(out, dim=1)


def main() -> None:
    torch.manual_seed(0)
    model = Reverser()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(600):
        src = torch.randint(0, VOCAB, (64, LENGTH))
        tgt = src.flip(1)
        tgt_in = torch.cat([torch.full((64, 1), START), tgt[:, :-1]], dim=1)
        loss = F.cross_entropy(model(src, tgt_in).reshape(-1, VOCAB), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    model.eval()
    src = torch.randint(0, VOCAB, (256, LENGTH))
    accuracy = (model.reverse(src) == src.flip(1)).all(dim=1).float().mean().item()
    print(f"exact reversals on 256 new sequences: {accuracy:.1%}")
    print("example:", src[0].tolist(), "->", model.reverse(src[:1])[0].tolist())


if __name__ == "__main__":
    main()
