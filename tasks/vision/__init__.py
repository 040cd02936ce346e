"""Vision task: a ViT over image patches, classified through the tzoo CLI."""

from tzoo.tasks.vision.model import SIZES, ViT, vit_base, vit_small, vit_tiny
from tzoo.tasks.vision.tokenizer import PatchTokenizer, grid_size, patchify, unpatchify

__all__ = ["SIZES", "PatchTokenizer", "ViT", "grid_size", "patchify", "unpatchify", "vit_base", "vit_small", "vit_tiny"]
