"""LightningModule of the language-modeling task: next-token cross-entropy on every position.

Logs ``train/loss``, ``train/tokens_per_s``, ``val/loss`` and ``val/ppl``, and prints a short
sample at the end of each validation. The tokenizer travels inside every checkpoint (and as
``tokenizer.json`` in the run directory), so a checkpoint is sampled without the corpus.

``pretrained``: a GPT-2 folder (``tzoo.tasks.lm.gpt2``) or hub id to start from, sizes and weights
(see ``configs/lm/gpt2_finetune.yaml``); the data encodes the corpus with its BPE
(``data.init_args.tokenizer``: the same folder).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tzoo.tasks.base import TaskModule
from tzoo.tasks.config import OptimConfig, from_dict, signature_default
from tzoo.tasks.lm.model import GPT, GPTConfig
from tzoo.tasks.text import load_tokenizer

__all__ = ["LanguageModel"]

_FLAT_TRANSFORMER = ("dim", "depth", "num_heads", "num_kv_heads", "dropout", "bias", "feed_forward", "norm")
_FLAT_OPTIM = ("lr", "min_lr", "weight_decay", "betas", "warmup_steps")


class LanguageModel(TaskModule):
    task_name = "lm"
    card_metric = "val/ppl"
    throughput_unit = "tokens"

    def __init__(
        self,
        net: GPTConfig = GPTConfig(),
        optim: OptimConfig = OptimConfig(betas=(0.9, 0.99)),
        *,
        sample_prompt: str = "\n",
        sample_tokens: int = 200,
        pretrained: str | None = None,
        compile: bool = False,
    ) -> None:
        """``net``: the model (``GPTConfig``: vocabulary size, linked from the data by the ``tzoo``
        CLI, block size, absolute positions, and the core's ``TransformerConfig`` as
        ``net.transformer``). ``optim``: optimizer and schedule. ``sample_prompt`` /
        ``sample_tokens``: the sample printed after each validation (0 tokens: none).
        ``pretrained``: a GPT-2 folder (HF ``GPT2LMHeadModel``: config.json, weights and tokenizer
        files) or a hub id; the model takes its sizes, weights and tokenizer, and ``net`` only its
        dropout settings (``net.transformer.dropout``, ``attn_dropout``, ``drop_path``); another
        size set in ``net`` is an error. The data must encode with the same tokenizer
        (``data.init_args.tokenizer``: the same folder). ``compile``: ``torch.compile`` the
        forward and the loss as one graph for training (``compile_for_fit``)."""
        super().__init__(optim=optim, compile=compile)
        default = signature_default(type(self), "net")
        net = from_dict(GPTConfig, net, where="net", base=default)
        start: GPT | None = None
        if pretrained is not None:
            net, start = _pretrained(pretrained, net, default)
        self.save_hyperparameters()
        self.model = GPT(net)
        self.sample_prompt, self.sample_tokens = sample_prompt, sample_tokens
        self.tokenizer: Any = None
        self.pretrained = pretrained
        if start is not None:
            from tzoo.tasks.lm.gpt2 import load_gpt2_tokenizer

            self.model.load_state_dict(start.state_dict())
            self.tokenizer = load_gpt2_tokenizer(pretrained)
        self._val_losses: list[Tensor] = []
        self._loss_graph: Callable[[Tensor, Tensor], Tensor] | None = None  # compile_for_fit's; not state

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint of an older tzoo took the model's and optimizer's arguments flat
        (``dim``, ``depth``, ``lr`` ...); they are ``net`` / ``optim`` now. A model fine-tuned from
        ``pretrained`` weights holds them already: it is rebuilt without reading them again."""
        if hparams.get("pretrained"):
            hparams = {**hparams, "pretrained": None}
        if "net" in hparams or "dim" not in hparams:
            return hparams
        flat = dict(hparams)
        transformer = {k: flat.pop(k) for k in _FLAT_TRANSFORMER if k in flat}
        position = flat.pop("position", "learned")
        if position == "rope":
            transformer["position"] = "rope"
        net = {
            "vocab_size": flat.pop("vocab_size", None),
            "block_size": flat.pop("block_size", 256),
            "position": "learned" if position == "learned" else "none",
            "transformer": transformer,
        }
        optim = {k: flat.pop(k) for k in _FLAT_OPTIM if k in flat}
        return {**flat, "net": net, "optim": optim}

    # --- set-up -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "tokenizer"):
            block = getattr(datamodule, "block_size", None)
            if block is not None and block > self.model.block_size:
                raise ValueError(
                    f"the data's block_size={block} is larger than the model's block_size={self.model.block_size} "
                    f"(its maximum positions); set model.init_args.net.block_size >= {block} or data.init_args.block_size <= {self.model.block_size}"
                )
            if self.tokenizer is None:
                self.tokenizer = datamodule.tokenizer
            elif self.pretrained is not None and not _same_tokenizer(self.tokenizer, datamodule.tokenizer):
                raise ValueError(
                    f"the data's tokenizer is not the one of model.init_args.pretrained={self.pretrained!r}: set "
                    f"data.init_args.tokenizer={self.pretrained!r} so the corpus is encoded with its BPE"
                )
        if stage in ("fit", "validate") and self.tokenizer is not None and self.sample_tokens > 0:
            self._check_sample_prompt()

    def _check_sample_prompt(self) -> None:
        """The prompt of the sample printed after each validation encodes: checked before training,
        not found at the first sample, an epoch in."""
        try:
            self.tokenizer.encode(self.sample_prompt)
        except ValueError as err:
            raise ValueError(
                f"model.init_args.sample_prompt={self.sample_prompt!r} cannot be encoded with this corpus's tokenizer: "
                f"{err}; give a prompt of the corpus's characters (e.g. the default '\\n'), or sample_tokens=0 for no sample"
            ) from None

    # --- steps --------------------------------------------------------------------------------

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(idx)

    def compile_for_fit(self) -> None:
        """``compile=True``: the forward and the cross-entropy as one graph, so the fp32 cast and the
        log-softmax over the vocabulary fuse (GPT-2 small on an H200, bf16, batch 16, in
        benchmarks/gpu.py's own loop, not through ``tzoo fit``: 31.2% MFU with the model compiled
        alone, 40.1% with its loss; docs/gpu.md). The model stays plain: checkpoints keep its
        state-dict keys."""
        self._loss_graph = torch.compile(self._logits_loss)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_loss_graph": None}  # the graph runs this module's weights: a copy compiles its own

    def _logits_loss(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self.model(x)  # (B, N, V)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch  # (B, N) each
        return (self._loss_graph or self._logits_loss)(x, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log_train_metrics({"train/loss": loss}, prog_bar=("train/loss",))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._val_losses.append(self._loss(batch).detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_losses:
            return
        loss = torch.stack(self._val_losses).mean()
        self._val_losses.clear()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/ppl", torch.exp(loss), sync_dist=True)
        if self.trainer.sanity_checking or self.tokenizer is None or self.sample_tokens <= 0:
            return
        text = self.sample(self.sample_prompt, max_new_tokens=self.sample_tokens, temperature=0.8, top_k=50, seed=0)
        if self.trainer.is_global_zero:
            print(f"\n--- sample at step {self.global_step} (val/loss {loss.item():.3f}) ---\n{text}\n---", flush=True)
            for logger in self.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_text"):
                    experiment.add_text("val/sample", text, self.global_step)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch), sync_dist=True)

    #: ``tzoo predict`` writes one JSON line per prompt: {"prompt", "completion"} (text may span lines)
    predict_file = "generations.jsonl"

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[Any]]:
        """``{"index": (B,), "prompt": [B strings]}`` (``TextDataModule.predict_dataloader``) -> the
        prompts and their completions: ``sample_tokens`` tokens each, sampled as the validation
        sample is (temperature 0.8, top-k 50), seeded by the prompt's line so a rerun repeats them."""
        if self.sample_tokens < 1:
            raise ValueError(
                f"model.init_args.sample_tokens={self.sample_tokens}: tzoo predict would generate nothing; "
                f"set --model.init_args.sample_tokens N (the tokens generated per prompt)"
            )
        indices = [int(i) for i in batch["index"]]
        completions = [
            self.sample(prompt, max_new_tokens=self.sample_tokens, temperature=0.8, top_k=50, seed=index)[len(prompt) :]
            for index, prompt in zip(indices, batch["prompt"])
        ]
        return {"prompt": list(batch["prompt"]), "completion": completions}

    def prediction_rows(self, predictions: list[dict[str, list[Any]]], data: Any) -> list[dict[str, Any]]:
        return [{"prompt": p, "completion": c} for out in predictions for p, c in zip(out["prompt"], out["completion"])]

    # --- sampling -----------------------------------------------------------------------------

    def sample(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        seed: int | None = None,
        stop_at_eot: bool = True,
        compile: bool = False,
    ) -> str:
        """prompt + up to ``max_new_tokens`` sampled tokens, as text (``compile``: see ``GPT.generate``)."""
        if self.tokenizer is None:
            raise ValueError("this LanguageModel has no tokenizer yet: load it from a checkpoint or fit it first")
        ids = self.tokenizer.encode(prompt) or [self.tokenizer.eot_id]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)[:, -self.model.block_size :]
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        out = self.model.generate(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            use_cache=use_cache,
            stop=self.tokenizer.eot_id if stop_at_eot else None,
            generator=generator,
            compile=compile,
        )
        new = out[0, idx.shape[1] :].tolist()
        if stop_at_eot and self.tokenizer.eot_id in new:
            new = new[: new.index(self.tokenizer.eot_id)]
        return prompt + self.tokenizer.decode(new)

    # --- checkpoints --------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        folder = self.output_dir()  # none without a logger: no stray tokenizer files in the working directory
        if self.tokenizer is not None and folder is not None:
            self.tokenizer.save(folder / "tokenizer.json")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.pretrained is not None and "hyper_parameters" in checkpoint:
            # the sizes came from the pretrained folder, not from the config's net: the checkpoint
            # keeps them, so that it is rebuilt without the folder (upgrade_hparams drops `pretrained`)
            checkpoint["hyper_parameters"] = {**checkpoint["hyper_parameters"], "net": dataclasses.asdict(self.model.cfg)}
        if self.tokenizer is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "tokenizer.json"
                self.tokenizer.save(path)
                checkpoint["tokenizer"] = json.loads(path.read_text(encoding="utf-8"))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "tokenizer" in checkpoint:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "tokenizer.json"
                path.write_text(json.dumps(checkpoint["tokenizer"]), encoding="utf-8")
                self.tokenizer = load_tokenizer(path)

    def count_nodes(self, batch: tuple[Tensor, Tensor]) -> int:
        """Token nodes in a training batch (the run card's nodes/s)."""
        return batch[0].numel()


# --- pretrained weights ---------------------------------------------------------------------------

_TRAINING_ONLY = ("dropout", "attn_dropout", "drop_path")  # what net may set over a pretrained model


def _pretrained(source: str, net: GPTConfig, default: GPTConfig) -> tuple[GPTConfig, GPT]:
    """The GPT-2 of ``source`` and its config with ``net``'s dropout settings; a size ``net`` sets
    (away from the default) that differs from the weights' is a ValueError naming both."""
    from tzoo.tasks.lm.gpt2 import load_gpt2

    if Path(source).expanduser().is_file():
        raise ValueError(
            f"model.init_args.pretrained={source!r} is a file: give a GPT-2 folder (config.json, weights and its tokenizer) "
            f"or a hub id; a nanoGPT checkpoint has no tokenizer (load it with tzoo.tasks.lm.gpt2.load_gpt2)"
        )
    gpt = load_gpt2(source)
    theirs = gpt.cfg
    if net.vocab_size is not None and net.vocab_size != theirs.vocab_size:
        raise ValueError(
            f"model.init_args.pretrained={source!r} has a vocabulary of {theirs.vocab_size} tokens but net.vocab_size is "
            f"{net.vocab_size} (linked from the data's tokenizer): set data.init_args.tokenizer={source!r} so the corpus is "
            f"encoded with its BPE"
        )
    for name in ("block_size", "position"):
        if getattr(net, name) != getattr(default, name) and getattr(net, name) != getattr(theirs, name):
            raise ValueError(f"net.{name}={getattr(net, name)!r} conflicts with the pretrained GPT-2's {getattr(theirs, name)!r}: leave it unset")
    for f in dataclasses.fields(net.transformer):
        ours, base, weights = (getattr(c, f.name) for c in (net.transformer, default.transformer, theirs.transformer))
        if f.name not in _TRAINING_ONLY and ours != base and ours != weights:
            raise ValueError(
                f"net.transformer.{f.name}={ours!r} conflicts with the pretrained GPT-2's {weights!r}: with model.init_args.pretrained "
                f"the sizes come from its config.json (only {', '.join(_TRAINING_ONLY)} may be set)"
            )
    stack = dataclasses.replace(theirs.transformer, **{k: getattr(net.transformer, k) for k in _TRAINING_ONLY})
    return dataclasses.replace(theirs, transformer=stack), gpt


def _same_tokenizer(a: Any, b: Any) -> bool:
    """The same kind and vocabulary (compared through the saved files)."""
    if a.kind != b.kind or a.vocab_size != b.vocab_size:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        a.save(Path(tmp) / "a.json")
        b.save(Path(tmp) / "b.json")
        return bool(json.loads((Path(tmp) / "a.json").read_text(encoding="utf-8")) == json.loads((Path(tmp) / "b.json").read_text(encoding="utf-8")))
