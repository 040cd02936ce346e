"""Hugging Face hub folders for the importers (GPT-2, Whisper, the Decision Transformer): a local
folder as it is, or a hub id (``owner/name``) downloaded once into the Hugging Face cache."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["HUB_EXTRA", "hub_folder"]

HUB_EXTRA = "pip install 'tzoo[hub]'"


def hub_folder(path: str | Path, *, files: list[str], missing: str, unreachable: str) -> Path:
    """``path`` if it is a folder, else the hub id's snapshot of ``files`` (glob patterns).
    ``missing``: the FileNotFoundError for a path that is neither; ``unreachable``: the one for a
    hub id that cannot be downloaded (``{error}`` is replaced by the exception's type)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        raise FileNotFoundError(missing)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(f"downloading {str(path)!r} from the Hugging Face hub needs tzoo's hub extra: {HUB_EXTRA}") from None
    try:
        return Path(snapshot_download(str(path), allow_patterns=files))
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated repository ...
        raise FileNotFoundError(unreachable.format(error=type(exc).__name__)) from None
