"""image_cutter.py: every cell of every image cut into a tile and a table row of a cell store (``stage``)."""
