"""Benchmarks: scripts that run vidq (or raw ffmpeg) and print figures (see docs/benchmarks.md)."""
