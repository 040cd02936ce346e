"""The GPU path, checked: every task trains in bf16, attention runs on fused kernels, the LM's MFU.

One script for a CUDA machine (under 5 minutes on one modern GPU), run in one go when a device is
lent (issue 24). Checks, each a row of the table (a failed one makes the exit status 1):

* **train**: every built-in task (lm, vision, decision, speech, bert) and the plugin (``sort`` from
  ``examples/plugin_sort``) trains ``--steps`` steps through ``tzoo fit``'s own construction
  (``TzooCLI`` on the task's config, shrunk only where data preparation would be long) with
  ``--trainer.precision bf16-mixed`` on the device: every loss finite, and the mean of the last
  quarter of the steps below the mean of the first quarter;
* **fused attention**: forward and backward in bf16 under ``sdpa_kernel`` restricted to the fused
  backends (flash, memory-efficient, cuDNN), so a fall back to the math kernel raises: the LM
  (causal), the ViT (no mask), a padded batch (key padding), the banded sliding window, ALiBi (a
  float bias) and grouped-query attention;
* **greedy decoding**: 500 new tokens with the KV cache on the device equal the CPU's (fp32, TF32
  off, same weights; a small GPT with weights of trained scale, so the top two logits seldom tie;
  at a difference the CPU's gap between its top two logits is reported);
* **LM MFU** at GPT-2-small size (12 layers, width 768, 12 heads, block 1,024, vocabulary 50,304,
  bf16 autocast, fused AdamW) at each ``--lm_batch`` (16, 32, 64), eager and ``torch.compile`` (the
  forward and the loss as one graph, so the fp32 log-softmax over the vocabulary fuses): tokens/s,
  and MFU from 6·N + 6·L·T·D
  FLOPs per token (N: the weights of the matrix products, the tied embedding / head included,
  positions not; causal attention at half of PaLM's 12·L·T·D) over the device's dense bf16 peak
  (the spec-sheet table below, or ``--peak_tflops``), next to a bf16 matmul rate measured on the
  same device;
* **ViT vs timm**: training images/s of ``vit_base_patch16_224`` (timm) and tzoo's ViT built
  from the same weights (``timm_vit.timm_config``), bf16, interleaved rounds, median ratio.

Targets (issue 24): LM MFU >= 40% at the best row (bf16, GPT-2 small), ViT >= 1.0x timm, every check green.
Measured on an H200 (docs/gpu.md): 43.7% (batch 64, compiled), 1.06x timm, all green.
On a machine without CUDA it prints why and exits 0 (``--device cpu --smoke`` runs every check
that has a CPU meaning at tiny sizes, which is how the tests keep the script working).

    python benchmarks/gpu.py [--steps 20] [--out benchmarks/results/gpu.json]
    python benchmarks/gpu.py --device cpu --smoke      # the script's own check, no GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
# dense bf16 tensor-core peaks from the vendors' spec sheets (TFLOP/s, no sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "A10G": 125.0, "A10": 125.0, "L40S": 362.0,
                    "L40": 181.0, "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "B200": 2250.0}  # fmt: skip


class Table:
    """The rows of the run: a check (pass/fail) or a measurement, printed as one Markdown table."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, group: str, name: str, ok: bool | None, value: str, **data: Any) -> None:
        self.rows.append({"group": group, "name": name, "ok": ok, "value": value, **data})
        mark = {True: "ok", False: "FAILED", None: "-"}[ok]
        print(f"[{mark}] {group}: {name}: {value}", flush=True)

    @contextlib.contextmanager
    def guard(self, group: str, name: str) -> Iterator[None]:
        """A check that raises is a failed row with the error, and the run goes on."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the run
            traceback.print_exc()
            self.add(group, name, False, f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}")

    def markdown(self) -> str:
        lines = ["| check | what | result | value |", "|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['group']} | {r['name']} | {({True: 'ok', False: '**FAILED**', None: '–'})[r['ok']]} | {r['value']} |")
        return "\n".join(lines)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["ok"] is False]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. every task trains in bf16 ---------------------------------------------------------------

# per task: its config and what keeps data preparation short (sizes stay the config's unless --smoke)
TASKS: dict[str, tuple[str, list[str]]] = {
    "lm": ("configs/lm/shakespeare_char.yaml", ["--model.init_args.sample_tokens=0"]),
    "vision": ("configs/vision/digits.yaml", ["--model.init_args.compile=false"]),
    "decision": ("configs/decision/cartpole.yaml", ["--data.init_args.episodes=50", "--model.init_args.eval_episodes=1"]),
    "speech": ("configs/speech/espeak_tiny.yaml", ["--data.init_args.corpus_size=[64,8,8]", "--data.init_args.num_workers=0"]),
    "bert": ("configs/bert/genre.yaml", ["--model.init_args.attention_passages=0"]),
    "sort": ("examples/plugin_sort/tzoo_sort/sort.yaml", []),
}
SMOKE: dict[str, list[str]] = {  # --smoke: tiny models, so the CPU check of the script is quick
    "lm": ["--model.init_args.net.transformer.dim=32", "--model.init_args.net.transformer.depth=1", "--data.init_args.batch_size=4",
           "--data.init_args.block_size=32", "--model.init_args.net.block_size=32"],
    "vision": [],  # the config is small already
    "decision": ["--data.init_args.episodes=10", "--model.init_args.net.transformer.dim=32", "--model.init_args.net.transformer.depth=1"],
    "speech": ["--data.init_args.corpus_size=[8,2,2]", "--data.init_args.max_words=2", "--data.init_args.workers=1", "--data.init_args.batch_size=4",
               "--model.init_args.net.encoder.dim=32", "--model.init_args.net.encoder.depth=1", "--model.init_args.net.encoder.num_heads=2",
               "--model.init_args.net.decoder.dim=32", "--model.init_args.net.decoder.depth=1", "--model.init_args.net.decoder.num_heads=2"],
    "bert": ["--model.init_args.net.transformer.dim=32", "--model.init_args.net.transformer.depth=1", "--data.init_args.tokenizer=char",
             "--data.init_args.batch_size=8"],
    "sort": ["--model.init_args.net.encoder.dim=32", "--model.init_args.net.decoder.dim=32", "--data.init_args.batch_size=32"],
}  # fmt: skip


def _losses_callback() -> Any:
    import lightning.pytorch as pl

    class Losses(pl.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []
            self.devices: set[str] = set()  # where the weights were during training (Lightning moves them back to the CPU after fit)

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.values.append(float(loss.detach().float()))
            self.devices |= {p.device.type for p in module.parameters()}

    return Losses()


def train_tasks(table: Table, args: argparse.Namespace, root: Path) -> None:
    from tzoo.tasks.cli import TzooCLI, nested_nulls

    sys.path.insert(0, str(REPO / "examples" / "plugin_sort"))  # the plugin, importable without installing it
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    for task in args.tasks:
        config, extra = TASKS[task]
        name = f"{task}: {args.steps} steps, bf16-mixed"
        with table.guard("train", name):
            losses = _losses_callback()
            cli_args = ["--config", str(REPO / config), *extra, *(SMOKE[task] if args.smoke else []),
                        f"--trainer.accelerator={accelerator}", "--trainer.devices=1", "--trainer.precision=bf16-mixed",
                        f"--trainer.max_steps={args.steps}", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
                        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={root / task}",
                        f"--model.init_args.optim.warmup_steps={max(1, args.steps // 4)}"]  # fmt: skip
            cli = TzooCLI(args=nested_nulls(cli_args), run=False)
            cli.trainer.callbacks.append(losses)
            start = time.perf_counter()
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            seconds = time.perf_counter() - start
            values = losses.values
            quarter = max(1, len(values) // 4)
            first, last = statistics.fmean(values[:quarter]), statistics.fmean(values[-quarter:])
            finite = all(math.isfinite(v) for v in values)
            on_device = losses.devices == {args.device}
            ok = finite and last < first and len(values) == args.steps and on_device
            table.add("train", name, ok, f"loss {first:.3f} -> {last:.3f} ({len(values)} steps, {seconds:.0f} s)"
                      + ("" if finite else ", NOT FINITE") + ("" if on_device else ", weights not on the device"),
                      losses=values, seconds=seconds)  # fmt: skip


# --- 2. attention on fused kernels --------------------------------------------------------------


def _fused_only() -> contextlib.AbstractContextManager[None]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


def fused_attention(table: Table, device: torch.device) -> None:
    from tzoo.core import Encoder, TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig
    from tzoo.tasks.vision.model import ViT, ViTConfig, vit_small

    if device.type != "cuda":
        table.add("fused attention", "all cases", None, "skipped: the fused SDPA kernels are CUDA's")
        return
    torch.manual_seed(0)
    stack = dict(dim=256, depth=2, num_heads=4)

    def encoder(**options: Any) -> Callable[[], torch.Tensor]:
        model = Encoder(TransformerConfig(**stack, **options)).to(device)
        x = torch.randn(4, 512, 256, device=device, requires_grad=True)
        real = torch.arange(512, device=device)[None] < torch.tensor([512, 400, 300, 77], device=device)[:, None]  # (B, N)
        return lambda padding=False: model(x, key_padding_mask=real if padding else None).float().square().mean()

    lm = GPT(GPTConfig(1000, block_size=1024, position="none", transformer=TransformerConfig(**stack, position="rope"))).to(device)
    ids = torch.randint(0, 1000, (4, 1024), device=device)
    vit = ViT(ViTConfig(num_classes=10, in_channels=3, image_size=224, patch_size=16, transformer=vit_small())).to(device)
    images = torch.randn(8, 3, 224, 224, device=device)
    cases: dict[str, Callable[[], torch.Tensor]] = {
        "LM, causal (RoPE)": lambda: lm(ids).float().logsumexp(-1).mean(),
        "ViT-S/16, no mask": lambda: vit(images).float().logsumexp(-1).mean(),
        "encoder, padded batch (key padding)": lambda: encoder()(padding=True),
        "encoder, banded window 64": lambda: encoder(window=64)(),
        "encoder, ALiBi (float bias)": lambda: encoder(position="alibi")(),
        "encoder, grouped-query (4 -> 1 kv heads)": lambda: encoder(num_kv_heads=1)(),
    }
    for name, loss_of in cases.items():
        with table.guard("fused attention", name):
            with torch.autocast("cuda", dtype=torch.bfloat16), _fused_only():
                loss = loss_of()
                loss.backward()
            sync(device)
            table.add("fused attention", name, bool(torch.isfinite(loss)), "forward + backward ran with the math kernel disabled")


# --- 3. greedy decoding: device == CPU ----------------------------------------------------------


def _trained_scale(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights of the size training leaves (activations of order one), so greedy choices are clear."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) * (1.5 / math.sqrt(p.shape[-1])))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def greedy_equal(table: Table, device: torch.device, new_tokens: int) -> None:
    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig

    name = f"{new_tokens} greedy tokens, KV cache, fp32: {device.type} == cpu"
    with table.guard("decoding", name):
        cfg = GPTConfig(65, block_size=512 + 16, position="none", transformer=TransformerConfig(dim=128, depth=4, num_heads=4, position="rope"))
        cpu = GPT(cfg).eval()
        _trained_scale(cpu)
        there = GPT(cfg).eval().to(device)
        there.load_state_dict(cpu.state_dict())
        prompt = torch.randint(0, 65, (1, 12), generator=torch.Generator().manual_seed(1))
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            with torch.no_grad():
                a = cpu.generate(prompt, new_tokens, top_k=1)[0, 12:]
                b = there.generate(prompt.to(device), new_tokens, top_k=1)[0, 12:].cpu()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        same = int((a == b).cumprod(0).sum())
        if same == new_tokens:
            table.add("decoding", name, True, f"all {new_tokens} tokens equal")
            return
        with torch.no_grad():  # the CPU's margin between its top two logits where the two differ
            logits = cpu(torch.cat([prompt[0], a[:same]])[None])[0, -1]
            top = logits.topk(2).values
        table.add("decoding", name, False, f"first difference at token {same} (the CPU's top-two logit gap there: {float(top[0] - top[1]):.2e})")


# --- 4. LM throughput and MFU at GPT-2-small size -----------------------------------------------


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "--peak_tflops"
    if device.type != "cuda":
        return None, "no spec-sheet peak for a CPU"
    gpu = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):  # "H200" before "H100", "L40S" before "L40" / "L4"
        if key in gpu:
            return PEAK_BF16_TFLOPS[key], f"{gpu}: {key} spec sheet, dense bf16"
    return None, f"{gpu}: not in the peak table (give --peak_tflops)"


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e12


def lm_mfu(table: Table, device: torch.device, args: argparse.Namespace) -> None:
    """Training tokens/s and MFU at each batch size, eager and compiled; the check is the best of them
    (a user picks the batch that fills the device; every row is in the table)."""
    if args.smoke:
        vocab, block, dim, depth, heads, batches, steps = 256, 64, 64, 2, 2, [4], 4
    else:
        vocab, block, dim, depth, heads, batches, steps = 50304, 1024, 768, 12, 12, args.lm_batch, 30
    peak, source = peak_tflops(device, args.peak_tflops)
    measured = matmul_tflops(device, 256 if args.smoke else 8192, torch.bfloat16)
    table.add("LM MFU", "bf16 matmul rate measured", None, f"{measured:.0f} TFLOP/s (peak used: {peak or 'n/a'}; {source})",
              measured_tflops=measured, peak_tflops=peak)  # fmt: skip
    best: tuple[float, str] | None = None
    precision = "bf16" if device.type == "cuda" else "fp32"
    for batch in batches:
        for compiled in (False,) if args.smoke else (False, True):  # compiling is minutes of CPU: not in the smoke check
            name = f"GPT-2 small ({depth}x{dim}, block {block}, batch {batch}), {precision}{', compiled (forward + loss)' if compiled else ''}"
            with table.guard("LM MFU", name):
                try:
                    mfu = _mfu_row(table, name, device, peak, vocab, block, dim, depth, heads, batch, steps, compiled)
                except torch.cuda.OutOfMemoryError:  # a smaller card: this batch is a skipped row, not a failed run
                    mfu = None
                    table.add("LM MFU", name, None, "skipped: out of GPU memory at this batch size")
                if device.type == "cuda":  # the row's model and optimizer are gone (a failed one's too): free their memory
                    torch.cuda.empty_cache()
                if mfu is not None and (best is None or mfu > best[0]):
                    best = (mfu, name)
    if not args.smoke:
        if best is None:
            table.add("LM MFU", "best of the rows above", False, "no row was measured (target >= 40%)")
        else:
            table.add("LM MFU", "best of the rows above", best[0] >= 0.40, f"MFU {best[0]:.1%}: {best[1]} (target >= 40%)", mfu=best[0])


def _mfu_row(table: Table, name: str, device: torch.device, peak: float | None, vocab: int, block: int, dim: int, depth: int,
             heads: int, batch: int, steps: int, compiled: bool) -> float | None:  # fmt: skip
    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig

    stack = TransformerConfig(dim=dim, depth=depth, num_heads=heads, bias=False, position="none")
    # bf16 autocast on the GPU; the CPU's --smoke checks the code path in fp32 (CPU bf16 matmuls are slow)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab, block_size=block, transformer=stack)).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=6e-4, betas=(0.9, 0.95), **fused)
    x = torch.randint(0, vocab, (batch, block + 1), device=device)

    def loss_of(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast:
            logits = model(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    # compiled: the forward and the loss in one graph, so the fp32 cast and log-softmax over the
    # 50,304-word vocabulary fuse (outside the graph they took ~17% of a compiled step on an H200)
    step_loss = torch.compile(loss_of) if compiled else loss_of

    def step() -> None:
        loss = step_loss(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3 if not compiled else 5):  # warm-up (and compilation)
        step()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    per_step = statistics.median(times)
    matrix_params = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n)
    flops_per_token = 6 * matrix_params + 6 * depth * block * dim  # causal attention: half of 12·L·T·D
    tokens_per_s = batch * block / per_step
    mfu = flops_per_token * tokens_per_s / (peak * 1e12) if peak else None
    table.add("LM MFU", name, None, f"{tokens_per_s:,.0f} tokens/s, {per_step * 1e3:.1f} ms/step, MFU "
              + (f"{mfu:.1%}" if mfu is not None else "n/a"), tokens_per_s=tokens_per_s, ms_per_step=per_step * 1e3, mfu=mfu,
              compiled=compiled, batch=batch)  # fmt: skip
    return mfu


# --- 5. ViT vs timm -----------------------------------------------------------------------------


def vit_vs_timm(table: Table, device: torch.device, args: argparse.Namespace) -> None:
    import timm

    from tzoo.tasks.vision.timm_vit import from_timm_state

    arch, size, batch, rounds, steps = ("vit_tiny_patch16_224", 32, 4, 3, 2) if args.smoke else ("vit_base_patch16_224", 224, 128, 5, 10)
    precision = "bf16" if device.type == "cuda" else "fp32"
    name = f"{arch} training images/s, {precision}, batch {batch}: tzoo / timm"
    with table.guard("ViT vs timm", name):
        torch.manual_seed(0)
        reference = timm.create_model(arch, pretrained=False, num_classes=1000, img_size=size)
        ours = from_timm_state(reference.state_dict())
        models = {"timm": reference.to(device), "tzoo": ours.to(device)}
        images = torch.randn(batch, 3, size, size, device=device)
        labels = torch.randint(0, 1000, (batch,), device=device)
        optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

        def run(key: str) -> float:
            model, opt = models[key], optims[key]
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext():
                    loss = F.cross_entropy(model(images).float(), labels)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync(device)
            return batch * steps / (time.perf_counter() - start)

        for key in models:  # warm-up
            run(key)
        rates: dict[str, list[float]] = {"timm": [], "tzoo": []}
        for _ in range(rounds):  # interleaved: timm, tzoo, timm, tzoo, ...
            for key in ("timm", "tzoo"):
                rates[key].append(run(key))
        ratio = statistics.median(t / r for t, r in zip(rates["tzoo"], rates["timm"]))
        ok = None if args.smoke else ratio >= 1.0
        table.add("ViT vs timm", name, ok, f"tzoo {statistics.median(rates['tzoo']):,.0f} / timm {statistics.median(rates['timm']):,.0f} "
                  f"images/s = {ratio:.2f}x" + ("" if args.smoke else " (target >= 1.0x)"), rates=rates, ratio=ratio)  # fmt: skip


# --- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the script's own check (with --device cpu, no GPU needed)")
    parser.add_argument("--steps", type=int, default=50, help="training steps per task (ViT on digits needs ~40 before its loss clearly falls)")
    parser.add_argument("--new_tokens", type=int, default=500)
    parser.add_argument("--lm_batch", type=int, nargs="+", default=[16, 32, 64], help="the LM MFU's batch sizes (block 1,024 each)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak, when not in the table")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS), help="the tasks to train")
    parser.add_argument("--only", nargs="*", default=None, choices=("train", "attention", "decoding", "mfu", "vit"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if args.steps < 4:
        parser.error(f"--steps must be >= 4 (the loss of the first and last quarter are compared), got {args.steps}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: skipped: no CUDA device here (torch.cuda.is_available() is False); "
              "`--device cpu --smoke` checks the script itself without one", flush=True)  # fmt: skip
        return 0  # no JSON: a CPU run never overwrites a device's results
    device = torch.device(args.device)
    only = set(args.only or ("train", "attention", "decoding", "mfu", "vit"))
    table = Table()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tzoo-gpu-") as tmp:
        os.environ.setdefault("TZOO_CACHE", str(Path(tmp) / "cache"))
        if "attention" in only:
            fused_attention(table, device)
        if "decoding" in only:
            greedy_equal(table, device, args.new_tokens)
        if "mfu" in only:
            lm_mfu(table, device, args)
        if "vit" in only:
            vit_vs_timm(table, device, args)
        if "train" in only:
            train_tasks(table, args, Path(tmp))
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    print()
    print(table.markdown())
    print(f"\n{machine}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s; {len(table.failed)} failed check(s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "torch": torch.__version__, "smoke": args.smoke, "rows": table.rows,
                                    "seconds": time.perf_counter() - started}, indent=1))  # fmt: skip
    print(f"wrote {args.out}")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
