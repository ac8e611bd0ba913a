"""Named sweeps: the runner and its CLI (``python -m experiments.sweeps NAME``), the definitions, the
results table (``collect``), means and 95% intervals over seeds (``stats``), the plots and the notebooks'
helpers."""
