"""Benchmarks that print their figures and write JSON + Markdown reports."""
