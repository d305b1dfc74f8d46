"""The one exception type that means "the user gave us something unusable"."""


class InputError(Exception):
    """Unusable user input (a bad file, folder or flag).

    Entry points turn it into a one-line message and a non-zero exit status instead of a
    traceback, so its message must name the offending item and say what is wrong with it.
    """
