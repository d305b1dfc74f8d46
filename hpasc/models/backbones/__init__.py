"""The backbone families that come with hpasc, one module each, each declaring its ``FAMILY`` (a
:class:`~hpasc.models.architecture.BackboneFamily`); :mod:`hpasc.models.registry` finds every module
here, so a new family is one new module and no edit elsewhere."""
