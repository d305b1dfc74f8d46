"""The data-centric tools: the relabeling web tool (:mod:`~hpasc.tools.label_tool`), Grad-CAM
heatmaps (:mod:`~hpasc.tools.gradcam`) and the dataset exploration report
(:mod:`~hpasc.tools.explore`)."""
