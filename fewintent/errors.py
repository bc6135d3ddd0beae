"""The one exception type users see: a mistake they can fix, with a message that says how."""

from __future__ import annotations


class FewIntentError(Exception):
    """A problem caused by input the user controls (a file, a model directory, an argument).

    The CLI prints the message on one line and exits non-zero; the HTTP server answers 4xx with it.
    """


class FewIntentWarning(Warning):
    """Something the user should know about a model that still works (e.g. an uncalibrated OOS threshold).

    Not a ``UserWarning``: the CLI silences library chatter of that kind but prints these, one line each.
    """
