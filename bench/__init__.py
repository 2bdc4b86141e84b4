"""The benchmark harness (SPEC.md "Performance targets"): `make bench`, or `python -m bench.run --quick|--full`."""
