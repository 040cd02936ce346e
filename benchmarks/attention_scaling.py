"""How attention's cost grows with the sequence: full causal SDPA, the masked sliding window, the
banded sliding window and linear attention; then generation with O(W) / O(1) decoding caches; and
optionally the quality of each at an equal training budget.

1. scaling: forward + backward of the attention op itself (q, k, v -> output; no projections), fp32,
   B=1, H=4, Dh=32, causal, for T = 1k .. 16k. Per cell the median wall time of ``--reps`` runs
   (implementations interleaved round by round; full causal SDPA, the baseline, measured first and
   again last in every round, so drift shows) and the peak memory of one forward + backward: the
   peak resident set size (VmHWM) of a fresh process above its resident size just before the
   call, the peak reset through /proc/self/clear_refs after a warm-up. Log-log slopes of time and
   memory against T say how each grows (1 = linear, 2 = quadratic). The child process allocates
   every block of 64 KiB or more through mmap (MALLOC_MMAP_THRESHOLD_), so what is freed leaves
   the process and the peak RSS counts each big tensor once its pages are touched.
2. forward only, T = 8192: the banded SDPA blocks against ``torch.nn.attention.flex_attention`` with
   a block mask, compiled (flex attention has no backward on CPU in this torch; eager flex attention
   materialises the whole score matrix).
3. generation: a 4-layer LM (dim 128, block_size 256) generating 4 x block_size tokens greedily one
   at a time — window 64 with rolling KV caches, linear attention with its states, and full
   attention with a growing KV cache (block_size 1024 so it need not start over) — tokens/s and
   the bytes its caches hold (a KVCache: the filled part; the others: all they allocate), per
   quarter of the run (the three take turns a quarter at a time; median of 3 runs).
4. ``--quality``: the LM on tinyshakespeare with block 512, full vs window 64 / 128 vs linear at
   the same steps, batch, sizes and seed: validation loss and wall time.

    python benchmarks/attention_scaling.py [--lengths 1024 2048 4096 8192 16384] [--reps 5] [--quality]

Prints Markdown tables and writes benchmarks/results/attention_scaling.json (the parts run replace
theirs; each part records the command, threads and load average of its run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from tzoo.core import banded_attention, linear_attention
from tzoo.core.linear_attention import feature_map

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "attention_scaling.json"
B, H, DH, WINDOW = 1, 4, 32, 256
METHODS = ("full causal SDPA", "masked window 256", "banded window 256", "linear (elu+1)")


def attention(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The causal attention op of each kind: (B, H, T, Dh) -> (B, H, T, Dh)."""
    if method == "full causal SDPA":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if method == "masked window 256":  # what MultiHeadAttention(window=256) did on every input before issue 19
        pos = torch.arange(q.shape[2])
        allowed = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < WINDOW)  # (T, T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    if method == "banded window 256":
        return banded_attention(q, k, v, window=WINDOW, causal=True)
    if method == "linear (elu+1)":
        return linear_attention(feature_map(q), feature_map(k), v, causal=True)[0]
    raise ValueError(method)


def inputs(t: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(t)
    return tuple(torch.randn(B, H, t, DH, generator=g).requires_grad_() for _ in range(3))


def fwd_bwd(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    attention(method, q, k, v).sum().backward()
    q.grad = k.grad = v.grad = None


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_child(method: str, t: int) -> None:
    """In a fresh process: one warm-up, reset the peak RSS, one measured forward + backward; print the bytes."""
    torch.set_num_threads(int(os.environ.get("ATTN_THREADS", torch.get_num_threads())))
    q, k, v = inputs(t)
    fwd_bwd(method, q, k, v)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _rss_kib("VmRSS")
    fwd_bwd(method, q, k, v)
    print(json.dumps({"peak_bytes": (_rss_kib("VmHWM") - before) * 1024}))


def peak_memory(method: str, t: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--_memory_child", method, str(t)], capture_output=True, text=True, check=True,
        # every allocation of 64 KiB or more through mmap: freed memory leaves the process, so the
        # warm-up's memory is not reused unseen, and the peak RSS counts each big tensor once touched
        env={**os.environ, "ATTN_THREADS": str(torch.get_num_threads()), "MALLOC_MMAP_THRESHOLD_": "65536"},
    )  # fmt: skip
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-12)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def scaling(lengths: list[int], reps: int) -> dict[str, Any]:
    rows = []
    for t in lengths:
        q, k, v = inputs(t)
        for method in METHODS:  # warm-up (and a check that every method agrees with the reference)
            fwd_bwd(method, q, k, v)
        with torch.no_grad():
            masked = attention("masked window 256", q, k, v)
            banded_err = (attention("banded window 256", q, k, v) - masked).abs().max().item()
        order = [METHODS[0], *METHODS[1:], METHODS[0] + " (again)"]
        times: dict[str, list[float]] = {name: [] for name in order}
        n = reps if t <= 4096 else max(3, reps // 2)
        for _ in range(n):
            for name in order:
                method = name.removesuffix(" (again)")
                start = time.perf_counter()
                fwd_bwd(method, q, k, v)
                times[name].append(time.perf_counter() - start)
        full = statistics.median(times[METHODS[0]])
        memory = {method: peak_memory(method, t) for method in METHODS}
        for name in order:
            method = name.removesuffix(" (again)")
            med = statistics.median(times[name])
            row = {"T": t, "method": name, "median_s": med, "runs": n, "peak_bytes": memory[method], "x_faster_than_full": full / med}
            if method == "banded window 256":
                row["max_abs_diff_vs_masked"] = banded_err
            rows.append(row)
            print(f"| {t} | {name} | {med * 1e3:.1f} | {full / med:.1f} | {memory[method] / 2**20:.1f} |", flush=True)
    slopes = {}
    for method in METHODS if len(set(lengths)) > 1 else ():  # a slope needs two lengths
        mine = [r for r in rows if r["method"] == method]
        ts = [r["T"] for r in mine]
        slopes[method] = {"time": slope(ts, [r["median_s"] for r in mine]), "memory": slope(ts, [r["peak_bytes"] for r in mine])}
    return {"rows": rows, "slopes": slopes}


def flex_forward(t: int = 8192, reps: int = 5) -> dict[str, Any]:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    with torch.no_grad():
        q, k, v = (x.detach() for x in inputs(t))

        def in_window(b, h, qi, ki):  # noqa: ANN001 (flex attention's mask_mod signature)
            return (ki <= qi) & (qi - ki < WINDOW)

        block_mask = create_block_mask(in_window, None, None, t, t, device="cpu")
        compiled = torch.compile(flex_attention)
        start = time.perf_counter()
        flex_out = compiled(q, k, v, block_mask=block_mask)
        compile_s = time.perf_counter() - start
        err = (flex_out - banded_attention(q, k, v, window=WINDOW, causal=True)).abs().max().item()
        runs: dict[str, Callable[[], Any]] = {
            "banded SDPA blocks": lambda: banded_attention(q, k, v, window=WINDOW, causal=True),
            "flex_attention, compiled": lambda: compiled(q, k, v, block_mask=block_mask),
            "full causal SDPA": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(reps):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    result = {"T": t, "compile_s": compile_s, "max_abs_diff_flex_vs_banded": err, "median_s": {n: statistics.median(ts) for n, ts in times.items()}}
    for name, med in result["median_s"].items():
        print(f"| {t} | {name} | {med * 1e3:.1f} |", flush=True)
    return result


def generation(block_size: int = 256, lengths_x: int = 4, dim: int = 128, repeats: int = 3) -> dict[str, Any]:
    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig

    total = lengths_x * block_size
    variants = {
        "window 64, rolling KV cache": dict(block_size=block_size, transformer=dict(window=64, position="rope")),
        "linear attention, state": dict(block_size=block_size, transformer=dict(attention="linear", position="rope")),
        "full attention, growing KV cache": dict(block_size=total, transformer=dict(position="rope")),
    }
    models = {}
    for name, spec in variants.items():
        torch.manual_seed(0)
        stack = TransformerConfig(dim=dim, depth=4, num_heads=4, bias=False, **spec["transformer"])
        models[name] = GPT(GPTConfig(65, block_size=spec["block_size"], position="none", transformer=stack)).eval()
    # per repeat: fresh caches; the variants take turns a quarter at a time, so load drift hits each alike
    rates: dict[str, list[list[float]]] = {name: [[] for _ in range(lengths_x)] for name in variants}
    held: dict[str, list[int]] = {name: [0] * lengths_x for name in variants}
    with torch.inference_mode():
        for _ in range(repeats):
            caches = {name: m.decoder.make_cache(m.block_size) for name, m in models.items()}
            tokens = {name: torch.zeros(1, 1, dtype=torch.long) for name in models}
            for name, m in models.items():  # warm-up on caches of their own
                for _ in range(8):
                    m(tokens[name], cache=m.decoder.make_cache(m.block_size))
            for quarter in range(lengths_x):
                for name, m in models.items():
                    start = time.perf_counter()
                    for _ in range(block_size):
                        tokens[name] = m(tokens[name], cache=caches[name])[:, -1].argmax(-1, keepdim=True)
                    rates[name][quarter].append(block_size / (time.perf_counter() - start))
                    held[name][quarter] = sum(_held_bytes(c) for c in caches[name])
    out: dict[str, Any] = {}
    for name in variants:
        out[name] = []
        for quarter in range(lengths_x):
            rate = statistics.median(rates[name][quarter])
            out[name].append({"tokens": (quarter + 1) * block_size, "tokens_per_s": rate, "cache_bytes": held[name][quarter]})
            print(f"| {name} | {(quarter + 1) * block_size} | {rate:.0f} | {held[name][quarter] / 2**10:.0f} |", flush=True)
    return {"block_size": block_size, "dim": dim, "depth": 4, "generated": total, "repeats": repeats, "variants": out}


def _held_bytes(cache: Any) -> int:
    """Bytes a decoding cache holds for the sequence: a KVCache's filled part (its buffer is allocated
    for max_len up front), a RollingKVCache's whole 2·window buffer, a linear-attention state."""
    from tzoo.core import KVCache

    tensors = [t for t in vars(cache).values() if isinstance(t, torch.Tensor)]
    if isinstance(cache, KVCache):
        return sum(t[:, :, : cache.length].numel() * t.element_size() for t in tensors)
    return sum(t.numel() * t.element_size() for t in tensors)


def quality(steps: int, block: int = 512, batch: int = 8, dim: int = 128, depth: int = 4, lr: float = 1e-3) -> dict[str, Any]:
    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig

    text = (REPO.parent / "shared" / "data" / "tinyshakespeare.txt").read_text()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]

    def batch_of(source: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(source) - block - 1, (batch,), generator=g)
        x = torch.stack([source[s : s + block] for s in starts.tolist()])
        y = torch.stack([source[s + 1 : s + block + 1] for s in starts.tolist()])
        return x, y

    variants = {
        "full": {},
        "window 128": {"window": 128},
        "window 64": {"window": 64},
        "linear": {"attention": "linear"},
    }
    out = {}
    for name, extra in variants.items():
        torch.manual_seed(0)
        stack = TransformerConfig(dim=dim, depth=depth, num_heads=4, bias=False, position="rope", **extra)
        model = GPT(GPTConfig(len(chars), block_size=block, position="none", transformer=stack))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
        g = torch.Generator().manual_seed(1)
        model.train()
        start = time.perf_counter()
        for _ in range(steps):
            x, y = batch_of(train, g)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        wall = time.perf_counter() - start
        model.eval()
        gv = torch.Generator().manual_seed(2)
        with torch.no_grad():
            losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in (batch_of(val, gv) for _ in range(20))]
        out[name] = {"val_loss": statistics.fmean(losses), "train_s": wall, "s_per_step": wall / steps}
        print(f"| {name} | {out[name]['val_loss']:.3f} | {wall:.0f} | {wall / steps * 1e3:.0f} |", flush=True)
    return {"steps": steps, "block": block, "batch": batch, "dim": dim, "depth": depth, "lr": lr, "variants": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["scaling", "flex", "generation"])
    parser.add_argument("--quality", action="store_true", help="also train the LM 4 times (minutes)")
    parser.add_argument("--quality_steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--_memory_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_child:
        peak_memory_child(args._memory_child[0], int(args._memory_child[1]))
        return
    # parts run now replace their entry in the JSON; the others stay, each with the run that made it
    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update({
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "settings": {"B": B, "H": H, "Dh": DH, "window": WINDOW, "dtype": "float32", "causal": True},
        "memory_measure": "peak RSS (VmHWM) of a fresh process above its RSS just before one forward + backward, after a "
                          "warm-up and a peak reset (/proc/self/clear_refs = 5); allocations >= 64 KiB through mmap",
    })  # fmt: skip
    parts: dict[str, Callable[[], Any]] = {}
    if "scaling" not in args.skip:
        parts["scaling"] = lambda: scaling(args.lengths, args.reps)
    if "flex" not in args.skip:
        parts["flex"] = flex_forward
    if "generation" not in args.skip:
        parts["generation"] = generation
    if args.quality:
        parts["quality"] = lambda: quality(args.quality_steps)
    headers = {
        "scaling": "| T | attention | median ms (fwd+bwd) | x faster than full | peak MiB |\n|---|---|---|---|---|",
        "flex": "| T | forward only | median ms |\n|---|---|---|",
        "generation": "| LM decoding | tokens so far | tokens/s | cache KiB |\n|---|---|---|---|",
        "quality": "| LM, block 512 | val loss | train s | ms/step |\n|---|---|---|---|",
    }
    command = "python benchmarks/attention_scaling.py " + " ".join(sys.argv[1:])
    for name, run in parts.items():
        print("\n" + headers[name])
        start = os.getloadavg()
        result[name] = run()
        result[name]["run"] = {"command": command, "threads": torch.get_num_threads(), "loadavg_start": start, "loadavg_end": os.getloadavg()}
        if name == "scaling" and result["scaling"]["slopes"]:
            print("\n| attention | time slope | memory slope |\n|---|---|---|")
            for method, s in result["scaling"]["slopes"].items():
                print(f"| {method} | {s['time']:.2f} | {s['memory']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
