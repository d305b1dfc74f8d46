#!/usr/bin/env python
"""The seed's name for ``hpasc-finetune``: see :mod:`hpasc.commands.finetune`."""

from hpasc.commands.finetune import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
