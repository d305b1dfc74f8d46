"""The numbers of the 4th place's border and outlier heuristics (:mod:`~hpasc.cells.factors`
applies them). Light to import: every tile spec records them."""

CLEAN = 1.0
NO_NUCLEUS = 0.01
CUT = 0.001
OUTLIER = 0.001
RED_SHARE = 0.077
BLUE_YELLOW_SHARE = 0.05
EDGE_CLEAN_ABOVE = 0.3
EDGE_CUT_BELOW = 0.01
THRESHOLDS = {"no_nucleus": NO_NUCLEUS, "cut": CUT, "outlier": OUTLIER, "red_share": RED_SHARE,
              "blue_yellow_share": BLUE_YELLOW_SHARE, "edge_clean_above": EDGE_CLEAN_ABOVE,
              "edge_cut_below": EDGE_CUT_BELOW}
"""The heuristics' numbers, recorded in every tile spec (store and checkpoint)."""
