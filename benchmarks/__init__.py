"""Benchmarks: they measure and print figures (ratios against a baseline in the same run where the issue asks for
one); they are not tests and assert nothing about speed. Run all with `python -m benchmarks`."""
