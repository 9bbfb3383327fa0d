"""The baselines, one module each; `benchmarks.components.discover` imports and registers them."""
