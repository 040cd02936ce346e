"""Vision: images chopped into patch nodes, a bidirectional encoder, a class read out.

tokenizer.py (image -> patch nodes + grid positions), model.py (ViTConfig, ViT, its named sizes,
the 2-D local attention mask), images.py (dataset sources and readers), data.py (the data
module), module.py (the LightningModule), attention_maps.py (attention over the patch grid, drawn
over the image), task.py (the registry entry).

The names exported here are imported on first use, so importing the package (as the registry's
``tzoo.tasks.vision.task`` does) loads none of the task's code.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tzoo.tasks.vision.model import SIZES, ViT, ViTConfig, local_mask, vit_base, vit_small, vit_tiny
    from tzoo.tasks.vision.tokenizer import PatchTokenizer, grid_size, patchify, unpatchify

_EXPORTS = {
    "SIZES": "tzoo.tasks.vision.model",
    "ViT": "tzoo.tasks.vision.model",
    "ViTConfig": "tzoo.tasks.vision.model",
    "local_mask": "tzoo.tasks.vision.model",
    "vit_base": "tzoo.tasks.vision.model",
    "vit_small": "tzoo.tasks.vision.model",
    "vit_tiny": "tzoo.tasks.vision.model",
    "PatchTokenizer": "tzoo.tasks.vision.tokenizer",
    "grid_size": "tzoo.tasks.vision.tokenizer",
    "patchify": "tzoo.tasks.vision.tokenizer",
    "unpatchify": "tzoo.tasks.vision.tokenizer",
}

__all__ = ["PatchTokenizer", "SIZES", "ViT", "ViTConfig", "grid_size", "local_mask", "patchify", "unpatchify", "vit_base", "vit_small", "vit_tiny"]


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
