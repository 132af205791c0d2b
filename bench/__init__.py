"""uffdtrace benchmarks: what tracing costs, measured side by side.

Run everything with `bench/run` (or `python -m bench`); see bench/README.md.
Every ratio compares conditions measured in the same run, alternating, over
several repetitions, and reports medians: the machine is shared and noisy.
"""
