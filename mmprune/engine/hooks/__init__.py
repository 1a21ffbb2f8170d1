"""mmprune.engine.hooks."""
