"""The one exception type that means "the user gave us something unusable", and how an OSError
reads on one line."""


class InputError(Exception):
    """Unusable user input (a bad file, folder or flag).

    Entry points turn it into a one-line message and a non-zero exit status instead of a
    traceback, so its message must name the offending item and say what is wrong with it.
    """


def describe_os_error(error: OSError) -> str:
    """``{path}: {reason}`` (the path the system names, else the message)."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason
