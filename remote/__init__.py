"""edgevit board farm: inventory (farm.toml), SSH deploy of the runtime and bundles, remote benchmarks."""
