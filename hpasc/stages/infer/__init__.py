"""infer.py: the ensemble, post-processing and the pipelined stage (``stage``)."""
