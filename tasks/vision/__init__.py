"""Vision: images chopped into patch nodes, a bidirectional encoder, a class read out.

tokenizer.py (image -> patch nodes + grid positions), model.py (ViTConfig, ViT, its named sizes,
the 2-D local attention mask), images.py (dataset sources and readers), data.py (the data
module), module.py (the LightningModule), attention_maps.py (attention over the patch grid, drawn
over the image), task.py (the registry entry).
"""

from tzoo.tasks.vision.model import SIZES, ViT, ViTConfig, local_mask, vit_base, vit_small, vit_tiny
from tzoo.tasks.vision.tokenizer import PatchTokenizer, grid_size, patchify, unpatchify

__all__ = [
    "SIZES",
    "PatchTokenizer",
    "ViT",
    "ViTConfig",
    "grid_size",
    "local_mask",
    "patchify",
    "unpatchify",
    "vit_base",
    "vit_small",
    "vit_tiny",
]
