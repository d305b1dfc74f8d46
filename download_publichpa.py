#!/usr/bin/env python
"""The seed's name for ``hpasc-download``: see :mod:`hpasc.commands.download`."""

from hpasc.commands.download import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
