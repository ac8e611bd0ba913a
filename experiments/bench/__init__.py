"""Benchmarks and analyses that print a table against a baseline measured in the same run: train
throughput (``train``), decode time (``decode``) and the memory tables and figures (``memory``)."""
