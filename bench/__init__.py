"""Load and latency benchmark of the whole mesh (issue 7): ``make bench``."""
