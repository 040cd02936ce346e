"""tzoo.core — the shared transformer core: attention, positional encodings, blocks, stacks.

Pure PyTorch (no Lightning). Import it as ``tzoo.core``.
"""

if __name__ != "tzoo.core":  # imported as a bare `core` from the repository root: two copies of every class
    raise ImportError(
        f"this package was imported as {__name__!r}; import it as 'tzoo.core' "
        "(install tzoo with `pip install -e .` and don't put the repository root's core/ on sys.path)"
    )
