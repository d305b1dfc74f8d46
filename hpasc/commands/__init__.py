"""The pipeline's stage commands: one module per stage, each with ``build_parser()`` and
``main(argv=None)``. ``pip install .`` puts them on PATH as ``hpasc-<module>`` (see pyproject.toml);
the seed's top-level scripts (``train_me.py`` …) are shims that call the same ``main``. The tools
(``hpasc.synthetic``, ``hpasc.tools.gradcam`` …) have the same ``main(argv=None)`` in their own modules.
"""
