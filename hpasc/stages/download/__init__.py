"""download_publichpa.py: the public HPA images (``stage``), and a local mirror of them for tests
and offline runs (``mirror``)."""
