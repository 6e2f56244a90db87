"""The training ring: what a run is (config.py), its inputs, the device, the loop (trainer.py), evaluation, the run folder,
metrics, convergence, and the measurements taken while training (drift, dynamics, cka). Builds on core and data."""
