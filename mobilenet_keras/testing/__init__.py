"""Helpers shared by the test suite and the benchmarks: where the reference data lives, and small
seeded CIFAR-10 slices and classifiers. Nothing in the package imports this; it imports the package."""
