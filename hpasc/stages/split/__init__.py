"""data_loader.py: the image-level, label-stratified train/validation split of a cell store (``stage``)."""
