"""The ``hsa-video`` command line: benchmarks now; serving and generation arrive with their issues."""
