"""The sample datasets, importable as labkit.data_samples so that they ship inside the wheel."""
