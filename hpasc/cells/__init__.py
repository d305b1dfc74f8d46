"""What a cell tile is: its tile spec (:mod:`~hpasc.cells.tile_spec`), cropping a cell into a tile
(:mod:`~hpasc.cells.crop`) and the 4th place's border and outlier factors
(:mod:`~hpasc.cells.factors`). Cutting a folder of images is the cut stage
(:mod:`hpasc.stages.cut`)."""
