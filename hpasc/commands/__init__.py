"""The command layer: one module per console script, each with ``build_parser()`` and
``main(argv=None)``, the only modules of the package that import argparse. A command parses its
flags into typed settings and calls one function of a stage or tool. ``pip install .`` puts them on
PATH as ``hpasc-*`` (pyproject.toml); the seed's top-level scripts (``train_me.py`` …) are shims
that call the same ``main``; ``python -m hpasc.commands.NAME`` runs one too.
"""
