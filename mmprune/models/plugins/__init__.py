"""mmprune.models.plugins."""
