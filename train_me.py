#!/usr/bin/env python
"""The seed's name for ``hpasc-train``: see :mod:`hpasc.commands.train`."""

from hpasc.commands.train import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
