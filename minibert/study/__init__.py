"""The study ring: the paper's tables as a grid of runs (grid.py, jobs.py), their report (report.py: findings,
healing, components, the data budget, figures), Figure 1 (figure1.py), which layers of two runs heal (layer_cka.py)
and the paper's own numbers (paper.py). Builds on core, data and training; reads finished runs, never the training
loop's internals."""
