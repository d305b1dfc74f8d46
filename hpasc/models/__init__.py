"""The classification models, shared by training, inference and the tools.

- :mod:`~hpasc.models.registry`: architectures by name (EfficientNets, any ``timm:NAME``), how each
  is built for 4 channels, started from ImageNet and explained by Grad-CAM;
- :mod:`~hpasc.models.spec`: :class:`~hpasc.models.spec.ModelSpec`, what rebuilds and feeds a model;
- :mod:`~hpasc.models.checkpoint`: the ``.pt`` checkpoint format (its one reader and writer);
- :mod:`~hpasc.models.scoring`: uint16 tiles → the 19 class probabilities.
"""
