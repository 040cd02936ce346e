"""Shared test set-up.

Lightning gives its loggers a ``logging.StreamHandler`` when it is first imported, bound to the
``sys.stderr`` of that moment. The ``tzoo`` command imports Lightning only when a subcommand needs it
(so that ``tzoo --help`` and ``tzoo tasks`` answer at once); without this import the first one would
happen inside a test, bind to that test's captured stderr, and every later Lightning log line would
fail on the closed stream ("--- Logging error ---" in another test's output).
"""

import lightning.pytorch  # noqa: F401


import signal  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _sigint_restored():
    """Lightning answers a KeyboardInterrupt by ignoring SIGINT for the rest of the process (its
    graceful shutdown) and never restores it; an ignored signal is inherited by every subprocess a
    later test starts, so a test's Ctrl-C would never reach them. Each test starts with Python's own."""
    yield
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
