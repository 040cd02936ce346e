"""LightningModule of the encoder-only text task: masked-LM pretraining or sequence classification.

``objective`` is linked from the data: ``MaskedTextDataModule`` gives ``mlm``, ``LabelledTextDataModule``
gives ``classify``, so a config picks the objective by picking its data.

- ``mlm`` logs ``train/loss``, ``val/loss`` and ``val/masked_acc``: the cross-entropy and accuracy
  on the chosen (masked) nodes only.
- ``classify`` logs ``train/loss``, ``val/loss``, ``val/acc`` and ``val/f1`` (macro-F1), the same under
  ``test/``; after each validation it draws the confusion matrix into
  ``<run>/confusion/step_N.png`` and the read-out node's attention over a few validation passages
  into ``<run>/attention/step_N.png``. ``tzoo predict`` writes ``predictions.csv`` (line, text,
  label, its probability, and a probability per class) into the run folder.

``pretrained``: a checkpoint of this task (a pretraining, or another classifier); its embedding,
positions and encoder are loaded when the model is built, the head starts fresh. A checkpoint of
another task, another vocabulary or other sizes is a ValueError saying which. The tokenizer travels
inside every checkpoint (and as ``tokenizer.json`` in the run folder); a model meeting data encoded
with another tokenizer is refused before training.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from tzoo.tasks.base import TaskModule
from tzoo.tasks.bert.tokenizer import IGNORE, special_ids, tokenizer_from_dict, tokenizer_to_dict
from tzoo.tasks.bert.model import OBJECTIVES, Bert, BertConfig
from tzoo.tasks.config import OptimConfig, from_dict, signature_default
from tzoo.tasks.reliability import read_checkpoint

__all__ = ["TextEncoder"]

# the net fields a pretrained encoder's weights depend on (dropout and the like may differ)
_SHAPE_FIELDS = ("dim", "depth", "num_heads", "num_kv_heads", "mlp_ratio", "feed_forward", "norm", "norm_first", "bias", "num_memory", "layer_scale", "position",
                 "block", "conv_kernel", "conv_norm")


class TextEncoder(TaskModule):
    task_name = "bert"
    throughput_unit = "tokens"
    predict_file = "predictions.csv"

    def __init__(
        self,
        net: BertConfig = BertConfig(),
        optim: OptimConfig = OptimConfig(weight_decay=0.01, betas=(0.9, 0.999)),
        *,
        objective: str = "classify",
        pretrained: str | None = None,
        label_smoothing: float = 0.0,
        attention_passages: int = 4,
        compile: bool = False,
    ) -> None:
        """``net``: the model (``BertConfig``: vocabulary size and classes, linked from the data by the
        ``tzoo`` CLI; positions, pooling, and the core's ``TransformerConfig`` as ``net.transformer``).
        ``optim``: optimizer and schedule. ``objective``: ``mlm`` or ``classify`` (linked from the
        data). ``pretrained``: a checkpoint of this task whose encoder the model starts from.
        ``label_smoothing``: of the classification loss. ``attention_passages``: how many validation
        passages the attention figure shows (0: no figures)."""
        super().__init__(optim=optim, compile=compile)
        net = from_dict(BertConfig, net, where="net", base=signature_default(type(self), "net"))
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES} (the data module sets it)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if attention_passages < 0:
            raise ValueError(f"attention_passages must be >= 0, got {attention_passages}")
        self.save_hyperparameters()
        self.model = Bert(net, objective=objective)
        self.objective, self.label_smoothing, self.attention_passages = objective, label_smoothing, attention_passages
        self.tokenizer: Any = None
        self.class_names: tuple[str, ...] | None = None
        if objective == "mlm":
            self.val_loss, self.val_masked_acc = MeanMetric(), MeanMetric()
        else:
            K = net.num_classes
            self.val_acc, self.test_acc = MulticlassAccuracy(K, average="micro"), MulticlassAccuracy(K, average="micro")
            self.val_f1, self.test_f1 = MulticlassF1Score(K, average="macro"), MulticlassF1Score(K, average="macro")
            self.val_confusion = MulticlassConfusionMatrix(K)
        if pretrained is not None:
            self._load_pretrained(pretrained)

    @property
    def card_metric(self) -> str:  # type: ignore[override]
        return "val/masked_acc" if self.objective == "mlm" else "val/acc"

    # --- pretrained encoder -------------------------------------------------------------------

    def _load_pretrained(self, path: str) -> None:
        where = f"pretrained checkpoint {path!r}"
        file = Path(path).expanduser()
        if file.is_file() and not zipfile.is_zipfile(file):  # tzoo's checkpoints are torch's zip archives
            raise ValueError(
                f"{where} is not a checkpoint (not a torch zip archive; a tokenizer.json or a config?): give a "
                f"checkpoint of `tzoo fit --config configs/bert/pretrain.yaml` (runs/bert/version_N/checkpoints/last.ckpt)"
            )
        checkpoint = read_checkpoint(file)
        stamp = checkpoint.get("tzoo", {}) if isinstance(checkpoint, dict) else {}
        if stamp.get("task") != "bert" or "state_dict" not in checkpoint:
            written = f"the {stamp['task']!r} task ({stamp.get('class_path')})" if stamp.get("task") else "no tzoo task"
            raise ValueError(
                f"{where} was written by {written}, not by bert: give a checkpoint of "
                f"`tzoo fit --config configs/bert/pretrain.yaml` (runs/bert/version_N/checkpoints/last.ckpt)"
            )
        theirs = (checkpoint.get("hyper_parameters") or {}).get("net") or {}
        ours = self.hparams["net"]
        if theirs.get("vocab_size") not in (None, ours["vocab_size"]):
            raise ValueError(
                f"{where} has a vocabulary of {theirs['vocab_size']} tokens but the data's tokenizer has {ours['vocab_size']}: "
                f"encode the data with the checkpoint's tokenizer (data.init_args.tokenizer={path})"
            )
        t_theirs, t_ours = theirs.get("transformer") or {}, ours["transformer"]
        differ = [(f"net.transformer.{f}", t_theirs[f], t_ours[f]) for f in _SHAPE_FIELDS if f in t_theirs and t_theirs[f] != t_ours[f]]
        fields = ("max_len", "position") if ours["position"] == "learned" else ("position",)  # RoPE / ALiBi: any length
        differ += [(f"net.{f}", theirs[f], ours[f]) for f in fields if f in theirs and theirs[f] != ours[f]]
        if differ:
            shown = ", ".join(f"{name}={there!r} (this model: {here!r})" for name, there, here in differ)
            raise ValueError(
                f"{where} was trained with other sizes: {shown}; give the model the pretraining's net settings "
                f"(net.transformer.*, net.max_len, net.position as in its config.yaml)"
            )
        state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
        self.model.load_encoder(state, where=where)
        if "tokenizer" in checkpoint:
            self.tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A trained model's weights already hold its pretrained encoder: rebuilding it from its
        checkpoint (test, predict, resume) does not read the pretraining checkpoint again."""
        return {**hparams, "pretrained": None} if hparams.get("pretrained") else hparams

    # --- set-up -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        length = getattr(data, "max_len", None)
        if length is not None and length > self.model.max_len:
            raise ValueError(
                f"the data's texts take up to {length} nodes but the model's net.max_len={self.model.max_len} (its "
                f"positions); set model.init_args.net.max_len >= {length} or the data's max_len / block_size <= {self.model.max_len}"
            )
        tokenizer = getattr(data, "tokenizer", None)
        if tokenizer is not None:
            if self.tokenizer is None:
                self.tokenizer = tokenizer
            elif tokenizer_to_dict(tokenizer) != tokenizer_to_dict(self.tokenizer):
                raise ValueError(
                    f"the data is encoded with another tokenizer ({tokenizer.kind}, {tokenizer.vocab_size} tokens) than "
                    f"the model's ({self.tokenizer.kind}, {self.tokenizer.vocab_size} tokens, from its checkpoint): give the "
                    f"data the model's tokenizer, data.init_args.tokenizer=<the checkpoint or its run's tokenizer.json>"
                )
        classes = getattr(data, "classes", None)
        if self.objective == "classify" and classes is not None:
            if self.class_names is not None and tuple(classes) != self.class_names:
                raise ValueError(
                    f"the model was trained on the classes {list(self.class_names)} but the data has {list(classes)}: "
                    f"use data with the model's labels"
                )
            self.class_names = tuple(classes)

    # --- steps --------------------------------------------------------------------------------

    def forward(self, ids: Tensor, real: Tensor | None = None) -> Tensor:
        return self.model(ids, real)

    def _mlm(self, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, int]:
        """(masked-token loss, masked-token accuracy, chosen nodes)."""
        inputs, real, targets = batch
        h = self.model.features(inputs, real)  # (B, N, D)
        chosen = targets != IGNORE  # (B, N)
        target = targets[chosen]  # (M,)
        logits = self.model.mlm_logits(h[chosen])  # (M, V): the head runs on the chosen nodes only
        loss = F.cross_entropy(logits, target)
        return loss, (logits.argmax(dim=-1) == target).float().mean(), target.numel()

    def _classify(self, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        ids, real, labels = batch
        logits = self.model(ids, real)  # (B, K)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing), logits

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._mlm(batch)[0] if self.objective == "mlm" else self._classify(batch)[0]
        self.log_train_metrics({"train/loss": loss}, prog_bar=("train/loss",))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        if self.objective == "mlm":
            loss, acc, n = self._mlm(batch)
            self.val_loss.update(loss, weight=n)
            self.val_masked_acc.update(acc, weight=n)
            self.log("val/loss", self.val_loss, prog_bar=True)
            self.log("val/masked_acc", self.val_masked_acc)
            return
        loss, logits = self._classify(batch)
        labels = batch[2]
        self.log("val/loss", loss, batch_size=len(labels), prog_bar=True, sync_dist=True)
        self.val_acc(logits, labels)
        self.val_f1(logits, labels)
        self.val_confusion.update(logits, labels)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/f1", self.val_f1)

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        if self.objective == "mlm":
            loss, acc, n = self._mlm(batch)
            self.log("test/loss", loss, batch_size=n, sync_dist=True)
            self.log("test/masked_acc", acc, batch_size=n, sync_dist=True)
            return
        loss, logits = self._classify(batch)
        labels = batch[2]
        self.log("test/loss", loss, batch_size=len(labels), sync_dist=True)
        self.test_acc(logits, labels)
        self.test_f1(logits, labels)
        self.log("test/acc", self.test_acc)
        self.log("test/f1", self.test_f1)

    def predict_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        """Class probabilities (B, K)."""
        if self.objective != "classify":
            raise ValueError("tzoo predict classifies texts: give a classifier's checkpoint (objective 'classify'), not a pretraining's")
        return self.model(batch[0], batch[1]).softmax(dim=-1)

    def prediction_rows(self, predictions: list[Tensor], data: Any) -> list[dict[str, Any]]:
        """One row per text: its line, the text, the predicted label, its probability, and ``p_<class>``
        for every class."""
        probs = torch.cat(predictions).float().cpu()
        names = self.class_names or tuple(str(k) for k in range(probs.shape[1]))
        items = list(getattr(data, "predict_items", None) or [(i + 1, "") for i in range(len(probs))])
        rows = []
        for (line, text), row in zip(items, probs):
            k = int(row.argmax())
            rows.append(
                {"line": line, "text": text, "label": names[k], "probability": f"{row[k].item():.4f}"}
                | {f"p_{name}": f"{p:.4f}" for name, p in zip(names, row.tolist())}
            )
        return rows

    # --- pictures -----------------------------------------------------------------------------

    def on_validation_epoch_end(self) -> None:
        if self.objective != "classify":
            return
        matrix = self.val_confusion.compute()  # on every rank: a collective under DDP
        self.val_confusion.reset()
        trainer = self.trainer
        if self.attention_passages <= 0 or trainer.sanity_checking:
            return
        folder = self.run_dir()  # on every rank: log_dir is a collective under DDP
        if folder is None or not trainer.is_global_zero:
            return
        from tzoo.tasks.bert.figures import attention_figure, confusion_figure

        names = self.class_names or tuple(str(k) for k in range(matrix.shape[0]))
        step = f"step_{self.global_step:06d}"
        confusion_figure(matrix, names, folder / "confusion" / f"{step}.png", title=f"validation at step {self.global_step}")
        data = getattr(trainer, "datamodule", None)
        if data is None or not hasattr(data, "example_batch") or self.tokenizer is None:
            return
        (ids, real, labels), sources = data.example_batch(self.attention_passages)
        tokens = [[self.tokenizer.decode([i]) for i in row[mask].tolist()] for row, mask in zip(ids, real)]
        attention_figure(
            self.model, ids.to(self.device), real.to(self.device), tokens, folder / "attention" / f"{step}.png",
            labels=labels, class_names=names, sources=sources,
        )  # fmt: skip

    # --- checkpoints --------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        folder = self.run_dir()  # none without a logger: no stray tokenizer files in the working directory
        if self.tokenizer is not None and folder is not None and self.trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(folder / "tokenizer.json")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.tokenizer is not None:
            checkpoint["tokenizer"] = tokenizer_to_dict(self.tokenizer)
        if self.class_names is not None:
            checkpoint["class_names"] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # checked here, before Lightning loads the weights: otherwise a mismatch is a shape error deep
        # inside load_state_dict
        net = (checkpoint.get("hyper_parameters") or {}).get("net") or {}
        trained_objective = (checkpoint.get("hyper_parameters") or {}).get("objective", self.objective)
        if trained_objective != self.objective:
            raise ValueError(
                f"the checkpoint was trained for objective={trained_objective!r} but this model (built for the data) is "
                f"{self.objective!r}: to classify with a pretrained encoder, fine-tune it (model.init_args.pretrained=<it>)"
            )
        for name, ours in (("vocab_size", self.model.vocab_size), ("num_classes", self.model.cfg.num_classes)):
            if net.get(name) is not None and net[name] != ours:
                raise ValueError(
                    f"the checkpoint was trained with {name}={net[name]}, but this model (built for the data) has "
                    f"{name}={ours}: use the data the checkpoint was trained on (and its tokenizer)"
                )
        if "tokenizer" in checkpoint:
            self.tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
            special_ids(self.tokenizer, where="the checkpoint's tokenizer")
        if "class_names" in checkpoint:
            self.class_names = tuple(checkpoint["class_names"])

    # --- run card -----------------------------------------------------------------------------

    def count_nodes(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        """Real (non-padding) nodes in a training batch (the run card's nodes/s)."""
        return int(batch[1].sum())
