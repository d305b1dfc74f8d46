#!/usr/bin/env python
"""The seed's name for ``hpasc-infer``: see :mod:`hpasc.commands.infer`."""

from hpasc.commands.infer import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
