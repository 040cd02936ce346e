"""tzoo.tasks — the task framework and the built-in tasks.

The modules directly in this package are the framework (``base``, ``config``, ``cli``, ``registry``,
``loading``, ``predictions``, ``sampling``, ``text``, ``runs``, ``reliability``, ...): every task
uses them and no task edits them. Each subpackage is one built-in task (``lm``, ``vision``,
``decision``, ``speech``) and touches nothing outside its folder; a third-party task is a package of
its own, registered through the ``tzoo.tasks`` entry point group.

Import it as ``tzoo.tasks``.
"""

if __name__ != "tzoo.tasks":  # imported as a bare `tasks` from the repository root: two copies of every class
    raise ImportError(
        f"this package was imported as {__name__!r}; import it as 'tzoo.tasks' "
        "(install tzoo with `pip install -e .` and don't put the repository root's tasks/ on sys.path)"
    )
