"""asv benchmarks of fgn_arrays: cost against the number of classes (see common.py)."""
