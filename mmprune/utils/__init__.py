"""mmprune.utils."""
