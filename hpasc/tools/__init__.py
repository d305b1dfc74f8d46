"""What runs beside the stages: the relabeling web tool (``label_tool``), Grad-CAM heatmaps
(``gradcam``), the exploration report (``explore``), pseudo-labels (``pseudo_label``), cell-level
evaluation (``cell_eval``), a run's report (``report``), label ids carried to other masks
(``label_remap``), the Kaggle bundle's helpers (``kaggle``) and synthetic data with ground truth
(``synthetic``). Their commands are in :mod:`hpasc.commands`."""
