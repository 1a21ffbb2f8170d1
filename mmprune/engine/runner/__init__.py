"""mmprune.engine.runner."""
