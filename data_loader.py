#!/usr/bin/env python
"""The seed's name for ``hpasc-split``: see :mod:`hpasc.commands.split`."""

from hpasc.commands.split import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
