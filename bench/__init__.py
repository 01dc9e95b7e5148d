"""Benchmarks (run by make targets; never timed inside the tests)."""
