"""Commands and tools around the library: train and eval (one run, and scoring it; train.py and eval.py at the top of
the repository are their shims), watch a sentence go through (trace), the tour, parity with transformers, download,
benchmark. They may use every ring; nothing in the library imports them (the grid starts `minibert train` as a
process)."""
