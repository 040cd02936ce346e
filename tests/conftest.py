"""Shared test set-up.

Lightning gives its loggers a ``logging.StreamHandler`` when it is first imported, bound to the
``sys.stderr`` of that moment. The ``tzoo`` command imports Lightning only when a subcommand needs it
(so that ``tzoo --help`` and ``tzoo tasks`` answer at once); without this import the first one would
happen inside a test, bind to that test's captured stderr, and every later Lightning log line would
fail on the closed stream ("--- Logging error ---" in another test's output).
"""

import lightning.pytorch  # noqa: F401
