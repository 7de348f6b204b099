"""Evaluation on real benchmarks: datasets, metrics, methods and a resumable runner."""
