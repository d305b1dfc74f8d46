"""Links in the HTML pages the tools write (Grad-CAM index, explore reports).

A file name comes from an image id, which comes from a user's file names: ``javascript:...``
or ``a?b#c`` must stay a relative file link. Each path component is percent-quoted (so no ``:``
can start a scheme, no ``?`` or ``#`` can end the path) and the result is HTML-escaped.
"""

from __future__ import annotations

import html
from pathlib import PurePosixPath
from urllib.parse import quote


def href(path: str) -> str:
    """The attribute value (for ``href``/``src``) that links the relative file ``path``."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute():
        raise ValueError(f"a link needs a relative file path, got {path!r}")
    return html.escape("/".join(quote(part, safe="") for part in parts), quote=True)
