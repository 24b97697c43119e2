"""Benchmarks: stylefold against pastiche, and the daemon's throughput.

Run them from the repository root as modules (`python -m bench.compare_pastiche`); they read the
real images in ../shared/data, which a user's clone does not have, so nothing here is a test.
"""
