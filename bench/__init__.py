"""The benchmark harness (docs/benchmarks.md): `make bench`, or `python -m bench.run --quick|--full`."""
