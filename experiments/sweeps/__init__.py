"""Named sweeps: the runner and its CLI (``python -m experiments.sweeps NAME``), the definitions, the
results table (``collect``), the plots and the notebooks' helpers."""
