"""Model-family converters (export, parity check, optional optimisation) and the repository writer."""
