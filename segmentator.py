#!/usr/bin/env python
"""The seed's name for ``hpasc-segment``: see :mod:`hpasc.commands.segment`."""

from hpasc.commands.segment import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
