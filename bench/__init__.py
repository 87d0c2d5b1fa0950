"""Benchmarks: every contender side by side on this machine. Entry point: ``bench/run``."""
