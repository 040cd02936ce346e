"""`tzoo export`: an LM checkpoint as a GPT-2 folder and a decision checkpoint as an HF Decision
Transformer folder, each loaded by transformers with the same outputs as tzoo; any checkpoint as
plain safetensors; bad formats, files and folders are one line naming them."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tzoo.tasks.cli import main  # noqa: E402
from tzoo.tasks.loading import load_module  # noqa: E402

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40


def _fit(root, model: str, data: str) -> str:
    config = root / "tiny.yaml"
    config.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        trainer: {{max_steps: 2, limit_val_batches: 0, default_root_dir: {root / "runs"}, enable_progress_bar: false, enable_model_summary: false}}
        model: {model}
        data: {data}
        """))  # fmt: skip
    main(["fit", "--config", str(config)])
    (ckpt,) = (root / "runs").rglob("last.ckpt")
    return str(ckpt)


@pytest.fixture(scope="module")
def lm_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_lm")
    (root / "corpus.txt").write_text(CORPUS)
    return _fit(
        root,
        "{class_path: tzoo.tasks.lm.module.LanguageModel, init_args: {sample_tokens: 0, net: {block_size: 16, "
        "transformer: {dim: 16, depth: 2, num_heads: 2, feed_forward: gelu_tanh}}}}",  # bias: false, the LM default
        f"{{class_path: tzoo.tasks.lm.data.TextDataModule, init_args: {{corpus: {root / 'corpus.txt'}, block_size: 16, "
        f"batch_size: 2, cache_dir: {root / 'cache'}}}}}",
    )


@pytest.fixture(scope="module")
def decision_ckpt(tmp_path_factory):
    from tzoo.tasks.decision.collect import collect_episodes, write_dataset

    root = tmp_path_factory.mktemp("export_decision")
    minari_root = root / "minari"
    write_dataset("test/pendulum-v0", collect_episodes("Pendulum-v1", 4, seed=0), "Pendulum-v1", data_dir=minari_root)
    return _fit(
        root,
        "{class_path: tzoo.tasks.decision.module.DecisionTransformer, init_args: {net: {transformer: {dim: 16, depth: 2, "
        "num_heads: 2, feed_forward: relu}}, optim: {warmup_steps: 1}, eval_episodes: 0}}",
        f"{{class_path: tzoo.tasks.decision.data.TrajectoryDataModule, init_args: {{env_id: Pendulum-v1, dataset: test/pendulum-v0, "
        f"data_dir: {minari_root}, context_length: 5, batch_size: 4}}}}",
    )


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tzoo: error: "), line
    return line


def test_an_lm_checkpoint_exports_as_a_gpt2_folder(lm_ckpt, tmp_path):
    main(["export", lm_ckpt, "--to", "hf", str(tmp_path / "gpt2")])
    module = load_module(lm_ckpt)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2").eval()
    ids = torch.randint(0, module.model.cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (reference(ids).logits - module.model(ids)).abs().max() < 1e-5
    assert (tmp_path / "gpt2" / "tzoo_tokenizer.json").is_file()  # the char tokenizer travels with the weights


def test_a_decision_checkpoint_exports_as_an_hf_decision_transformer(decision_ckpt, tmp_path):
    main(["export", decision_ckpt, "--to", "hf", str(tmp_path / "dt")])
    module = load_module(decision_ckpt)
    reference = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "dt").eval()
    saved = json.loads((tmp_path / "dt" / "config.json").read_text())["tzoo"]
    assert saved["env_id"] == "Pendulum-v1" and saved["context_length"] == 5
    g = torch.Generator().manual_seed(0)
    states, actions = torch.randn(2, 5, 3, generator=g), torch.rand(2, 5, 1, generator=g) * 4 - 2  # Pendulum's torque in [-2, 2]
    returns, timesteps = -500 * torch.rand(2, 5, generator=g), torch.arange(5).expand(2, 5)
    tokenizer = module.model.tokenizer
    with torch.no_grad():
        ours = module.model(returns, states, actions, timesteps)
        # the exported model takes the inputs tzoo's tokenizer normalises, normalised with the saved statistics
        theirs = reference(
            states=(states - torch.tensor(saved["state_mean"])) / torch.tensor(saved["state_std"]),
            actions=tokenizer.normalize_action(actions),
            returns_to_go=(returns / saved["return_scale"]).unsqueeze(-1),
            timesteps=timesteps,
        ).action_preds
    assert (theirs - ours).abs().max() < 1e-5


def test_any_checkpoint_exports_as_plain_safetensors(decision_ckpt, tmp_path):
    from safetensors import safe_open

    main(["export", decision_ckpt, "--to", "safetensors", str(tmp_path / "dt.safetensors")])
    state = load_module(decision_ckpt).state_dict()
    with safe_open(str(tmp_path / "dt.safetensors"), "pt") as f:
        assert f.metadata()["tzoo_task"] == "decision"
        assert json.loads(f.metadata()["tzoo_hparams"])["env_id"] == "Pendulum-v1"
        assert sorted(f.keys()) == sorted(state)
        assert all(torch.equal(f.get_tensor(k), state[k]) for k in state)


def test_bad_exports_are_one_line(lm_ckpt, tmp_path, capsys):
    line = one_line_error(capsys, ["export", lm_ckpt, "--to", "onnx", str(tmp_path / "x")])
    assert "--to 'onnx' is not a format tzoo exports to; valid: hf, timm, safetensors" in line
    line = one_line_error(capsys, ["export", lm_ckpt, "--to", "timm", str(tmp_path / "x.pth")])
    assert "the 'lm' task's checkpoints do not export --to timm; its formats: hf, safetensors" in line
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    line = one_line_error(capsys, ["export", str(tmp_path / "foreign.pt"), "--to", "hf", str(tmp_path / "x")])
    assert "foreign.pt' is not a Lightning checkpoint" in line and "checkpoint written by tzoo fit" in line
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    line = one_line_error(capsys, ["export", lm_ckpt, "--to", "hf", str(tmp_path / "full")])
    assert "full' exists and is not empty: give a new path, or --overwrite" in line
    main(["export", lm_ckpt, "--to", "hf", str(tmp_path / "full"), "--overwrite"])
    assert (tmp_path / "full" / "config.json").is_file() and (tmp_path / "full" / "keep.txt").is_file()


def test_a_missing_extra_is_one_line_naming_it(lm_ckpt, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if tzoo[hub] were not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    line = one_line_error(capsys, ["export", lm_ckpt, "--to", "safetensors", str(tmp_path / "w.safetensors")])
    assert "needs the safetensors package of tzoo's hub extra: pip install 'tzoo[hub]'" in line


def test_export_help_imports_neither_torch_nor_lightning():
    import subprocess
    import sys

    probe = "import sys\nfrom tzoo.tasks.cli import main\ntry:\n    main(['export', '--help'])\nexcept SystemExit:\n    pass\n" \
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'transformers')))"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "--to FORMAT" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:] + out.stderr[-500:]


@pytest.mark.parametrize("name", ["vit.safetensors", "vit.pth"])
def test_a_vision_module_exports_as_a_timm_state_dict(tmp_path, name):
    timm = pytest.importorskip("timm")
    from tzoo.core import TransformerConfig
    from tzoo.tasks.export import export_module
    from tzoo.tasks.reliability import read_checkpoint
    from tzoo.tasks.vision.model import ViTConfig
    from tzoo.tasks.vision.module import VisionClassifier

    net = ViTConfig(num_classes=10, image_size=32, in_channels=3, patch_size=8, pool="cls", position="learned",
                    transformer=TransformerConfig(dim=64, depth=2, num_heads=1, norm_eps=1e-6))  # fmt: skip
    module = VisionClassifier(net=net).eval()
    export_module(module, "timm", tmp_path / name)
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(tmp_path / name))
    else:
        state = read_checkpoint(tmp_path / name)
    reference = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=64, depth=2, num_heads=1)
    reference.load_state_dict(state)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (reference.eval()(images) - module.model(images)).abs().max() < 1e-5
