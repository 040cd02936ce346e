"""tzoo.tasks — Lightning task packages, the task registry and the ``tzoo`` CLI.

Import it as ``tzoo.tasks``.
"""

if __name__ != "tzoo.tasks":  # imported as a bare `tasks` from the repository root: two copies of every class
    raise ImportError(
        f"this package was imported as {__name__!r}; import it as 'tzoo.tasks' "
        "(install tzoo with `pip install -e .` and don't put the repository root's tasks/ on sys.path)"
    )
