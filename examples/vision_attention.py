"""Draw what a trained ViT attends to: for each image, the last layer's class-token attention
and the attention rollout over all layers, overlaid on the image, into one PNG.

    tzoo fit --config configs/vision/digits.yaml
    python examples/vision_attention.py runs/vision/version_0/checkpoints/last.ckpt \\
        --out examples/vision_attention_digits.png                   # fixed validation images
    python examples/vision_attention.py CKPT --files a.png b.png      # your own images

The data settings (dataset, folder) come from the checkpoint, so the images are prepared the way
the model was trained on them.
"""

import argparse

from tzoo.tasks.loading import load_checkpoint, load_module
from tzoo.tasks.vision.attention_maps import attention_figure
from tzoo.tasks.vision.data import ImageDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=6, help="how many validation images (one per class)")
    parser.add_argument("--files", nargs="+", help="image files to draw instead of validation images")
    parser.add_argument("--out", default="vision_attention.png")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU, else MPS, else the CPU), cpu, cuda or mps")
    args = parser.parse_args()

    module = load_module(args.checkpoint, task="vision", device=args.device)  # weights_only loading
    saved = load_checkpoint(args.checkpoint).get("datamodule_hyper_parameters", {})
    settings = {k: saved[k] for k in ("dataset", "data_dir") if saved.get(k) is not None}
    data = ImageDataModule(**settings, image_size=module.model.cfg.image_size)
    if args.files:
        images, labels = data.load_images(args.files), None
    else:
        images, labels = data.example_images(args.images)
    path = attention_figure(
        module.model, images.to(module.device), args.out, mean=data.mean, std=data.std, labels=labels, class_names=module.class_names
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
