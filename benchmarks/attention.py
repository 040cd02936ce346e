"""Attention speed: forward + backward, fp32, CPU, B=8, H=4, Dh=32, causal.

Compares the core ``MultiHeadAttention`` with the same projections around a raw
``F.scaled_dot_product_attention`` written inline, a naive math implementation (matmul, mask,
softmax, matmul) and ``torch.nn.MultiheadAttention``. Implementations are interleaved round by
round so that machine noise hits them alike; the table gives medians and ratios to inline SDPA.

    python benchmarks/attention.py [--rounds 30] [--out benchmarks/results/attention.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tzoo.core import MultiHeadAttention

B, H, DH = 8, 4, 32
D = H * DH


class InlineSDPA(nn.Module):
    """The core module's projections (one fused q/k/v matrix, an output matrix) with nothing but
    SDPA between them."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv_proj, self.out_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, n, _ = x.shape
        return self.qkv_proj(x).view(b, n, 3 * H, DH).transpose(1, 2).split(H, dim=1)  # 3 x (B, H, N, Dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, D))


class Naive(InlineSDPA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(DH)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, n, D))


class TorchMHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(D, H, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n)
        return self.mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]


class Core(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(D, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, is_causal=True)


IMPLEMENTATIONS = {"core MultiHeadAttention": Core, "inline SDPA": InlineSDPA, "naive math": Naive, "torch.nn.MultiheadAttention": TorchMHA}


def step_time(module: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    module(x).sum().backward()
    return time.perf_counter() - start


def run(lengths: list[int], rounds: int) -> list[dict]:
    rows = []
    for n in lengths:
        torch.manual_seed(0)
        modules = {name: cls() for name, cls in IMPLEMENTATIONS.items()}
        x = torch.randn(B, n, D, requires_grad=True)
        times: dict[str, list[float]] = {name: [] for name in modules}
        for name, m in modules.items():  # warm-up
            for _ in range(3):
                step_time(m, x)
        for _ in range(rounds):
            for name, m in modules.items():
                times[name].append(step_time(m, x))
        base = statistics.median(times["inline SDPA"])
        for name, ts in times.items():
            med = statistics.median(ts)
            q1, _, q3 = statistics.quantiles(ts, n=4)
            rows.append({"T": n, "impl": name, "median_ms": med * 1e3, "iqr_ms": (q3 - q1) * 1e3, "ratio_to_inline_sdpa": med / base})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.lengths, args.rounds)

    print(f"attention fwd+bwd, fp32 CPU, B={B} H={H} Dh={DH}, causal, {args.rounds} rounds, {args.threads} threads")
    print(f"| T | implementation | median ms | IQR ms | × inline SDPA |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['T']} | {r['impl']} | {r['median_ms']:.2f} | {r['iqr_ms']:.2f} | {r['ratio_to_inline_sdpa']:.2f} |")
    checks = {}
    for n in args.lengths:
        by = {r["impl"]: r for r in rows if r["T"] == n}
        checks[f"T={n}: core within 1.10x of inline SDPA"] = by["core MultiHeadAttention"]["ratio_to_inline_sdpa"] <= 1.10
        if n >= 256:
            checks[f"T={n}: core faster than naive"] = by["core MultiHeadAttention"]["median_ms"] < by["naive math"]["median_ms"]
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "machine": platform.machine(), "threads": args.threads, "B": B, "H": H, "Dh": DH}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "checks": checks}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
