"""Benchmarks of inqom-bridge (see bench/README.md)."""
