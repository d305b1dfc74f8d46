#!/usr/bin/env python
"""The seed's name for ``hpasc-cut``: see :mod:`hpasc.commands.cut`."""

from hpasc.commands.cut import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
