"""One module per group of scenarios; each exposes functions taking a `bench.run.Bench`."""
