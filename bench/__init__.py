"""Benchmarks (each runs as a script: python bench/<name>.py); importable from the repository
root as `bench.<name>` for the tests that exercise them."""
