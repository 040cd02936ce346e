"""LightningModule of the decision-transformer task: learn the logged actions, then play.

Training and validation losses are the action loss at every real step's state node:
cross-entropy for discrete actions, mean squared error of the tanh output against the action
mapped to [-1, 1] for continuous ones. Logs ``train/loss`` and ``val/loss``.

After each validation (not the sanity check) and each test, the model plays ``eval_episodes``
episodes of the real environment from reset seeds ``eval_seed`` on (the data collector's seeds
start at 0), asked for ``eval_target_return`` (default: the best return in the dataset), and
logs ``eval/return_mean``, ``eval/return_std`` and ``eval/normalized_return`` (0 = random
policy, 100 = the scripted expert). Discrete actions are drawn from softmax(logits /
``eval_temperature``) (0 = the most likely action). The normalisation statistics and the
reference scores are buffers, so a checkpoint plays without its dataset.

``pretrained``: a Hugging Face Decision Transformer folder (``tzoo.tasks.decision.hf_dt``) or hub id
to start from: sizes and weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tzoo.tasks.base import TaskModule
from tzoo.tasks.config import OptimConfig, from_dict, signature_default
from tzoo.tasks.decision.collect import REFERENCE_SCORES
from tzoo.tasks.decision.model import LINKED, DecisionTransformerModel, DTConfig
from tzoo.tasks.decision.rollout import Rollouts, check_play_settings, normalized_return, play

__all__ = ["DecisionTransformer"]

_STATISTICS = ("state_mean", "state_std", "return_scale")
# an older tzoo's flat arguments, and their defaults then
_FLAT_TRANSFORMER = {"dim": 128, "depth": 3, "num_heads": 1, "dropout": 0.1}
_FLAT_OPTIM = {"lr": 6e-4, "min_lr": None, "weight_decay": 1e-4, "betas": (0.9, 0.999), "warmup_steps": 200}


class DecisionTransformer(TaskModule):
    task_name = "decision"
    card_metric = "eval/normalized_return"
    strict_links = ("obs_dim", "act_dim", "discrete", "env_id")  # max_timestep and context_length may differ

    def __init__(
        self,
        net: DTConfig = DTConfig(),
        optim: OptimConfig = OptimConfig(lr=6e-4, weight_decay=1e-4, betas=(0.9, 0.999), warmup_steps=200),
        *,
        env_id: str | None = None,
        eval_episodes: int = 10,
        eval_target_return: float | None = None,
        eval_seed: int = 1_000_000,
        eval_temperature: float = 1.0,
        pretrained: str | None = None,
        compile: bool = False,
    ) -> None:
        """``net``: the model (``DTConfig``: the sizes linked from the data by the ``tzoo`` CLI, and
        the core's ``TransformerConfig`` as ``net.transformer``). ``optim``: optimizer and schedule.
        ``env_id`` (linked from the data too) is the environment the ``eval_*`` settings play.
        ``pretrained``: an HF ``DecisionTransformerModel`` folder (or hub id) of the data's state and
        action sizes (continuous actions); the model takes its stack, timestep table and weights,
        and from ``net`` its dropout settings and ``context_length``. Its state / return heads are
        left out (training reads actions only). The normalisation statistics are the data's, unless
        the folder was exported by tzoo with its own."""
        super().__init__(optim=optim, compile=compile)
        net = from_dict(DTConfig, net, where="net", base=signature_default(type(self), "net"))
        start = None
        if pretrained is not None:
            net, start = _pretrained(pretrained, net)
        missing = [f"net.{name}" for name in LINKED if getattr(net, name) is None]
        if missing or env_id is None:
            raise ValueError(
                f"{', '.join(missing + ['env_id'] * (env_id is None))} not set: the tzoo CLI links them from TrajectoryDataModule; "
                f"when building DecisionTransformer yourself pass net=DTConfig(obs_dim=data.obs_dim, act_dim=data.act_dim, "
                f"discrete=data.discrete, max_timestep=data.max_timestep, context_length=data.context_length) and env_id=data.env_id"
            )
        if eval_episodes < 0:
            raise ValueError(f"eval_episodes must be >= 0 (0 = don't play), got {eval_episodes}")
        try:  # checked here, not in the first evaluation after a training epoch
            check_play_settings(target_return=eval_target_return, temperature=eval_temperature)
        except ValueError as err:
            raise ValueError(f"eval_{err}") from None
        self.save_hyperparameters()
        self.model = DecisionTransformerModel(net)
        self.pretrained = pretrained
        if start is not None:
            ours = self.model.state_dict()
            self.model.load_state_dict({**ours, **{k: v for k, v in start.items() if k in ours}})
        self.env_id = str(env_id)
        self.eval_episodes, self.eval_target_return = eval_episodes, eval_target_return
        self.eval_seed, self.eval_temperature = eval_seed, eval_temperature
        # (random, expert) mean returns; NaN until known (from the dataset or the built-in table)
        reference = REFERENCE_SCORES.get(self.env_id, (float("nan"), float("nan")))
        self.register_buffer("reference_scores", torch.tensor(reference))
        self._val_losses: list[Tensor] = []

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint of an older tzoo took the model's and optimizer's arguments flat
        (``obs_dim``, ``dim``, ``lr`` ...); they are ``net`` / ``optim`` now. A model fine-tuned from
        ``pretrained`` weights holds them already: it is rebuilt without reading them again."""
        if hparams.get("pretrained"):
            hparams = {**hparams, "pretrained": None}
        if "net" in hparams or not any(k in hparams for k in (*LINKED, *_FLAT_TRANSFORMER, *_FLAT_OPTIM)):
            return hparams
        flat = dict(hparams)
        net: dict[str, Any] = {k: flat.pop(k) for k in LINKED if k in flat}
        net["transformer"] = {k: flat.pop(k, default) for k, default in _FLAT_TRANSFORMER.items()}
        optim = {k: flat.pop(k, default) for k, default in _FLAT_OPTIM.items()}
        return {**flat, "net": net, "optim": optim}

    # --- set-up -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)  # obs_dim, act_dim, discrete and env_id must be the data's
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None or getattr(data, "statistics", None) is None:
            return
        if data.context_length > self.model.context_length:
            raise ValueError(
                f"the data's context_length={data.context_length} exceeds the model's {self.model.context_length}"
            )
        tokenizer = self.model.tokenizer
        if not tokenizer.has_statistics:  # a fresh model; a trained one keeps its own
            tokenizer.set_statistics(data.statistics)
            if data.reference_scores is not None:
                self.reference_scores.copy_(torch.tensor(data.reference_scores))

    def on_train_start(self) -> None:
        returns = getattr(getattr(self.trainer, "datamodule", None), "returns", None)
        # the dataset's return distribution, next to the evaluation returns (once: a resumed run has it)
        if returns and self.global_step == 0:
            for logger in self.loggers:
                logger.log_metrics({f"data/return_{k}": v for k, v in returns.items()}, step=0)

    # --- steps --------------------------------------------------------------------------------

    def forward(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.model(returns_to_go, states, actions, timesteps, mask)

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        mask = batch["mask"]  # (B, K)
        pred = self.model(batch["returns_to_go"], batch["states"], batch["actions"], batch["timesteps"], mask)  # (B, K, A)
        if self.model.discrete:
            return F.cross_entropy(pred[mask], batch["actions"][mask])
        target = self.model.tokenizer.normalize_action(batch["actions"])  # (B, K, A) in [-1, 1]
        return F.mse_loss(pred[mask], target[mask])

    def count_nodes(self, batch: dict[str, Tensor]) -> int:
        """Real (return-to-go, state, action) nodes in a training batch: 3 per unpadded step."""
        return 3 * int(batch["mask"].sum())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log_train_metrics({"train/loss": loss}, prog_bar=("train/loss",))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._val_losses.append(self._loss(batch).detach())

    def on_validation_epoch_end(self) -> None:
        if self._val_losses:
            self.log("val/loss", torch.stack(self._val_losses).mean(), prog_bar=True, sync_dist=True)
            self._val_losses.clear()
        if not self.trainer.sanity_checking:
            self._log_evaluation()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation()

    def _log_evaluation(self) -> None:
        if self.eval_episodes == 0:
            return
        result = self.evaluate()
        self.log_dict({f"eval/{k}": v for k, v in result.items()}, prog_bar=False)

    # --- playing ------------------------------------------------------------------------------

    def rollouts(
        self, target_return: float | None = None, *, episodes: int | None = None, seed: int | None = None, temperature: float | None = None, record: bool = False
    ) -> Rollouts:
        """Play episodes in the environment (defaults: the ``eval_*`` settings)."""
        check_play_settings(target_return=target_return, temperature=temperature, episodes=episodes)
        tokenizer = self.model.tokenizer
        if not tokenizer.has_statistics:
            raise ValueError(
                "this DecisionTransformer has no normalisation statistics: fit it on a dataset or load a checkpoint that has them"
            )
        if target_return is None:
            target_return = self.eval_target_return if self.eval_target_return is not None else float(tokenizer.return_max)
        return play(
            self.model,
            self.env_id,
            target_return=target_return,
            episodes=self.eval_episodes if episodes is None else episodes,
            seed=self.eval_seed if seed is None else seed,
            temperature=self.eval_temperature if temperature is None else temperature,
            record=record,
        )

    def evaluate(self, target_return: float | None = None, **kwargs: Any) -> dict[str, float]:
        """``{"return_mean", "return_std", "normalized_return"}`` over played episodes."""
        returns = self.rollouts(target_return, **kwargs).returns
        reference = tuple(self.reference_scores.tolist())
        mean = float(returns.mean())
        return {"return_mean": mean, "return_std": float(returns.std()), "normalized_return": normalized_return(mean, reference)}

    #: ``tzoo predict`` writes one row per played episode
    predict_file = "returns.csv"

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """``{"target_return", "episodes", "seed"}`` (``TrajectoryDataModule.predict_dataloader``) ->
        the episodes played at that target return (None: the ``eval_target_return`` default)."""
        target = batch["target_return"]
        target = None if target is None else float(target)
        episodes, seed = int(batch["episodes"]), int(batch["seed"])
        rollouts = self.rollouts(target, episodes=episodes, seed=seed)
        asked = target if target is not None else self.eval_target_return if self.eval_target_return is not None else float(self.model.tokenizer.return_max)
        return {"target_return": asked, "seed": seed, "returns": rollouts.returns.tolist(), "lengths": rollouts.lengths.tolist()}

    def prediction_rows(self, predictions: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
        reference = tuple(self.reference_scores.tolist())
        return [
            {"env_id": self.env_id, "target_return": out["target_return"], "episode": i, "seed": out["seed"] + i,
             "return": r, "length": n, "normalized_return": normalized_return(r, reference)}
            for out in predictions for i, (r, n) in enumerate(zip(out["returns"], out["lengths"]))
        ]  # fmt: skip

    # --- checkpoints --------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.pretrained is not None and "hyper_parameters" in checkpoint:
            # the sizes came from the pretrained folder: the checkpoint keeps them, to rebuild without it
            checkpoint["hyper_parameters"] = {**checkpoint["hyper_parameters"], "net": dataclasses.asdict(self.model.cfg)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        problems = []
        for name in _STATISTICS:
            value = state.get(f"model.tokenizer.{name}")
            if value is None or not torch.isfinite(value).all():
                problems.append(f"model.tokenizer.{name} {'missing' if value is None else 'unset (NaN)'}")
        if problems:
            raise ValueError(
                f"checkpoint has no normalisation statistics ({', '.join(problems)}): it was saved before the model "
                f"saw its dataset; use a checkpoint saved during or after fit, or fit from this one with the data module"
            )


# --- pretrained weights ---------------------------------------------------------------------------

_BUFFERS = tuple(f"tokenizer.{name}" for name in ("state_mean", "state_std", "return_scale", "return_max", "action_low", "action_high"))
_TRAINING_ONLY = ("dropout", "attn_dropout", "drop_path")  # what net.transformer may set over pretrained weights


def _pretrained(source: str, net: DTConfig) -> tuple[DTConfig, dict[str, Any]]:
    """The config to fine-tune the HF Decision Transformer of ``source`` with, and the weights (and
    statistics, if the folder has tzoo's) to start from."""
    from tzoo.tasks.decision.hf_dt import dt_folder, load_hf_dt, saved_statistics

    folder = dt_folder(source)
    model = load_hf_dt(folder, context_length=net.context_length or 20)
    keep = saved_statistics(folder) is not None
    state = {k: v for k, v in model.state_dict().items() if keep or k not in _BUFFERS}
    theirs = model.cfg
    if net.discrete:
        raise ValueError(
            f"model.init_args.pretrained={source!r} is a Decision Transformer of continuous actions; the data's actions "
            f"are discrete (Hugging Face's layout has no discrete actions)"
        )
    for name in ("obs_dim", "act_dim"):
        if getattr(net, name) is not None and getattr(net, name) != getattr(theirs, name):
            raise ValueError(
                f"model.init_args.pretrained={source!r} has net.{name}={getattr(theirs, name)} but the data's is "
                f"{getattr(net, name)} (another environment?)"
            )
    stack = dataclasses.replace(theirs.transformer, **{k: getattr(net.transformer, k) for k in _TRAINING_ONLY})
    context = net.context_length if net.context_length is not None else theirs.context_length
    return dataclasses.replace(theirs, context_length=context, state_return_heads=False, transformer=stack), state
