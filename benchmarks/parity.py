"""Pretrained-weight parity: each reference model built by its own library with random weights of
trained scale (activations of order 1), saved in its own format, imported into tzoo, compared;
then exported by tzoo, loaded back by the reference library, compared again.

Rows: GPT-2 (HF ``GPT2LMHeadModel``, 4 layers, width 256), nanoGPT (its checkpoint layout, the same
HF weights with exact GELU), ViT (timm ``VisionTransformer``, tiny-like: 12 layers, width 192,
3 heads, patch 16, 224 px; also at 288 px through the resized position table), Decision Transformer
(HF ``DecisionTransformerModel`` at its default sizes: 3 layers, width 128, 1 head, ReLU; Pendulum-v1's
state and action sizes, K = 20 steps), Whisper (HF ``WhisperForConditionalGeneration`` at tiny's
sizes; its log-mel against ``WhisperFeatureExtractor`` on eSpeak NG speech). fp32, CPU, eval
mode. Also: tzoo's KV-cache greedy generation from the imported GPT-2 and Whisper against HF's ``generate``.

    python benchmarks/parity.py

Prints a Markdown table and writes benchmarks/results/parity.json.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
import transformers

from tzoo.tasks.decision.hf_dt import load_hf_dt, save_hf_dt
from tzoo.tasks.lm.gpt2 import load_gpt2, save_gpt2
from tzoo.tasks.speech.whisper import greedy_transcribe, load_whisper, save_whisper
from tzoo.tasks.vision.timm_vit import load_timm_vit, to_timm_state

OUT = Path(__file__).resolve().parent / "results" / "parity.json"


def trained_scale(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))


def gpt2_rows(tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for name, activation in (("GPT-2 (HF GPT2LMHeadModel)", "gelu_new"), ("nanoGPT checkpoint", "gelu")):
        config = transformers.GPT2Config(
            vocab_size=1000, n_positions=128, n_embd=256, n_layer=4, n_head=4, activation_function=activation,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        reference = transformers.GPT2LMHeadModel(config).eval()
        trained_scale(reference)
        ids = torch.randint(0, 1000, (2, 128), generator=torch.Generator().manual_seed(1))
        if activation == "gelu_new":
            reference.save_pretrained(tmp / "gpt2")
            source = tmp / "gpt2"
        else:  # nanoGPT's layout: nn.Linear weights (out, in), "_orig_mod." from torch.compile
            conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
            state = {f"_orig_mod.{k}": (v.t() if k.endswith(conv1d) else v) for k, v in reference.state_dict().items()}
            args = dict(n_layer=4, n_head=4, n_embd=256, block_size=128, bias=True, vocab_size=1000, dropout=0.0)
            torch.save({"model_args": args, "model": state}, tmp / "ckpt.pt")
            source = tmp / "ckpt.pt"
        with torch.no_grad():
            theirs = reference(ids).logits
            model = load_gpt2(source)
            imported = (model(ids) - theirs).abs().max().item()
            save_gpt2(model, tmp / "export")
            back = transformers.GPT2LMHeadModel.from_pretrained(tmp / "export").eval()
            exported = (back(ids).logits - theirs).abs().max().item()
        row = {"family": name, "compared": "logits", "mean_abs": theirs.abs().mean().item(), "import": imported, "export": exported}
        if activation == "gelu_new":
            prompt = ids[:1, :8]
            hf = reference.generate(prompt, max_new_tokens=100, do_sample=False, pad_token_id=0)
            ours = model.generate(prompt, 100, temperature=0, use_cache=True)
            row["greedy_100_tokens_equal"] = bool(torch.equal(hf, ours))
        rows.append(row)
    return rows


def vit_rows(tmp: Path) -> list[dict[str, Any]]:
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, num_classes=10, embed_dim=192, depth=12, num_heads=3
    ).eval()
    trained_scale(reference)
    torch.save(reference.state_dict(), tmp / "vit.pth")
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model = load_timm_vit(tmp / "vit.pth")
        theirs = reference(images)
        imported = (model(images) - theirs).abs().max().item()
        back = timm.models.vision_transformer.VisionTransformer(img_size=224, patch_size=16, num_classes=10, embed_dim=192, depth=12, num_heads=3).eval()
        back.load_state_dict(to_timm_state(model))
        exported = (back(images) - theirs).abs().max().item()
        big = torch.randn(2, 3, 288, 288, generator=torch.Generator().manual_seed(3))
        resized = timm.layers.resample_abs_pos_embed(reference.pos_embed, (18, 18), num_prefix_tokens=1)
        at_288 = timm.models.vision_transformer.VisionTransformer(img_size=288, patch_size=16, num_classes=10, embed_dim=192, depth=12, num_heads=3).eval()
        at_288.load_state_dict({**reference.state_dict(), "pos_embed": resized})
        theirs_288 = at_288(big)
        resized_gap = (model(big) - theirs_288).abs().max().item()
    return [
        {"family": "ViT (timm, tiny-like, 224 px)", "compared": "logits", "mean_abs": theirs.abs().mean().item(), "import": imported, "export": exported},
        {"family": "ViT (timm) at 288 px, resized positions", "compared": "logits", "mean_abs": theirs_288.abs().mean().item(), "import": resized_gap, "export": None},
    ]


def decision_rows(tmp: Path) -> list[dict[str, Any]]:
    config = transformers.DecisionTransformerConfig(
        state_dim=3, act_dim=1, max_ep_len=1000, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None
    )  # HF's defaults otherwise: hidden_size 128, n_layer 3, n_head 1, ReLU
    reference = transformers.DecisionTransformerModel(config).eval()
    trained_scale(reference)
    reference.save_pretrained(tmp / "dt")
    g = torch.Generator().manual_seed(4)
    B, K = 8, 20
    states, actions = torch.randn(B, K, 3, generator=g), torch.rand(B, K, 1, generator=g) * 2 - 1
    returns, timesteps = torch.randn(B, K, 1, generator=g), torch.randint(0, 1000, (B, K), generator=g)

    def hf(model: Any) -> tuple[torch.Tensor, ...]:
        out = model(states=states, actions=actions, returns_to_go=returns, timesteps=timesteps)
        return out.action_preds, out.state_preds, out.return_preds

    with torch.no_grad():
        theirs = hf(reference)
        model = load_hf_dt(tmp / "dt", context_length=K)
        imported = [(a - b).abs().max().item() for a, b in zip(model.predict(returns.squeeze(-1), states, actions, timesteps), theirs)]
        save_hf_dt(model, tmp / "dt_export")
        back = transformers.DecisionTransformerModel.from_pretrained(tmp / "dt_export").eval()
        exported = [(a - b).abs().max().item() for a, b in zip(hf(back), theirs)]
    return [{
        "family": "Decision Transformer (HF, 3 layers, width 128, ReLU, K=20)", "compared": "actions, next states, returns",
        "mean_abs": theirs[0].abs().mean().item(), "import": max(imported), "export": max(exported),
        "import_by_output": dict(zip(("actions", "states", "returns"), imported)),
        "export_by_output": dict(zip(("actions", "states", "returns"), exported)),
    }]  # fmt: skip


def whisper_rows(tmp: Path) -> list[dict[str, Any]]:
    """Whisper tiny-like (width 384, 4 + 4 layers, 6 heads, 80 mels, 51865 tokens) over 30 s of
    eSpeak NG speech padded as Whisper pads it: tzoo's log-mel vs WhisperFeatureExtractor, the
    encoder's states and the decoder's logits for a 32-token prefix, export -> HF, and tzoo's cached
    greedy decoding vs ``generate`` (no forced or suppressed tokens, one beam)."""
    from tzoo.tasks.speech.audio import to_model_rate
    from tzoo.tasks.speech.espeak import Synthesizer

    config = transformers.WhisperConfig(suppress_tokens=None, begin_suppress_tokens=None)  # tiny's sizes are the defaults
    reference = transformers.WhisperForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # trained scale, the encoder's fixed sinusoid table left as it is
        for name, p in reference.named_parameters():
            if not name.endswith("encoder.embed_positions.weight"):
                base = (1.0 if name.endswith("weight") else 0.0) if p.dim() == 1 else 0.0
                p.copy_(base + torch.randn(p.shape, generator=g) * (0.2 if p.dim() == 1 else 1 / math.sqrt(p[0].numel())))
    reference.save_pretrained(tmp / "whisper")
    synth = Synthesizer()
    samples = synth.synthesize("the quick brown fox jumps over the lazy dog", "en-us")
    wave = to_model_rate(torch.from_numpy(samples.astype("float32") / 32768), synth.sample_rate, 16000)
    extractor = transformers.WhisperFeatureExtractor()
    features = extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features  # (1, 80, 3000)
    ids = torch.randint(0, config.vocab_size, (1, 32), generator=g)
    with torch.no_grad():
        model = load_whisper(tmp / "whisper")
        mel, _ = model.frontend.logmel(wave[None], torch.tensor([len(wave)]))
        theirs = reference(input_features=features, decoder_input_ids=ids)
        encoded, _ = model.encode(wave[None], torch.tensor([len(wave)]))
        logits = model.decode(ids, encoded, None)
        save_whisper(model, tmp / "whisper_export", source=tmp / "whisper")
        back = transformers.WhisperForConditionalGeneration.from_pretrained(tmp / "whisper_export").eval()
        exported = (back(input_features=features, decoder_input_ids=ids).logits - theirs.logits).abs().max().item()
    start = config.decoder_start_token_id
    hf = reference.generate(features, decoder_input_ids=torch.tensor([[start]]), max_new_tokens=100, do_sample=False, num_beams=1)[0].tolist()
    hf = hf[1:] if hf[0] == start else hf
    ours = greedy_transcribe(model, wave, prompt=[start], eos=config.eos_token_id, max_new_tokens=100)
    return [
        {"family": "Whisper log-mel (tzoo vs WhisperFeatureExtractor, 30 s)", "compared": "log-mel", "mean_abs": features.abs().mean().item(),
         "import": (mel - features).abs().max().item(), "export": None},
        {"family": "Whisper (HF, tiny-like: width 384, 4+4 layers, 6 heads) encoder", "compared": "encoder states",
         "mean_abs": theirs.encoder_last_hidden_state.abs().mean().item(),
         "import": (encoded - theirs.encoder_last_hidden_state).abs().max().item(), "export": None},
        {"family": "Whisper (same) decoder, 32 tokens", "compared": "logits", "mean_abs": theirs.logits.abs().mean().item(),
         "import": (logits - theirs.logits).abs().max().item(), "export": exported, "greedy_100_tokens_equal": ours == hf, "greedy_tokens": len(ours)},
    ]  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = gpt2_rows(Path(tmp)) + vit_rows(Path(tmp)) + decision_rows(Path(tmp)) + whisper_rows(Path(tmp))
    print("| family | compared | mean abs value | max abs diff after import | after export -> reference | greedy generation |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        export = "–" if r["export"] is None else f"{r['export']:.1e}"
        greedy = {True: "equal (100 tokens)", False: "DIFFERS"}.get(r.get("greedy_100_tokens_equal"), "–")
        print(f"| {r['family']} | {r['compared']} | {r['mean_abs']:.2f} | {r['import']:.1e} | {export} | {greedy} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__, "timm": timm.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
