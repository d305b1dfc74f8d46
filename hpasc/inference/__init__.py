"""Inference: the ensemble, post-processing and the pipelined infer.py stage."""
