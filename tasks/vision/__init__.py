"""Vision: images chopped into patch nodes, a bidirectional encoder, a class read out.

tokenizer.py (image -> patch nodes + grid positions), model.py (ViT and its named sizes),
images.py (dataset sources and readers), data.py (the data module), module.py (the
LightningModule), attention_maps.py (attention over the patch grid, drawn over the image),
task.py (the registry entry).
"""

from tzoo.tasks.vision.model import SIZES, ViT, vit_base, vit_small, vit_tiny
from tzoo.tasks.vision.tokenizer import PatchTokenizer, grid_size, patchify, unpatchify

__all__ = ["SIZES", "PatchTokenizer", "ViT", "grid_size", "patchify", "unpatchify", "vit_base", "vit_small", "vit_tiny"]
