"""From masks to cells: cropping a cell into a tile (:mod:`~hpasc.cells.crop`), the 4th place's
border and outlier factors (:mod:`~hpasc.cells.factors`), cutting a folder of images into a cell
dataset (:mod:`~hpasc.cells.cutter`), and the image-level train/validation split
(:mod:`~hpasc.cells.split`)."""
