"""Benchmark suite of marconi-plan: `python -m benchmarks.run --suite paper [--quick]`.

The other files of this folder (bench_*.py) are stand-alone speed scripts of each area.
"""
