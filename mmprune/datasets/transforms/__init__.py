"""mmprune.datasets.transforms."""
