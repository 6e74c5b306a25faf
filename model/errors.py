"""Errors caused by what a user gave us (files, names, sizes, messages).

They carry one line that says what was wrong and what is accepted; the CLI prints it and exits 2, the
server turns it into an error reply. Anything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad user input: the message is one line naming the problem and what is accepted."""


def quoted(value, limit: int = 40) -> str:
    """``value`` quoted back in an error message, cut to ``limit`` characters (a message never echoes
    a long input whole)."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")
