"""Benchmarks and load tests: scripts that print measured ratios side by side, never timed tests."""
