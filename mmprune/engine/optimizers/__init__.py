"""mmprune.engine.optimizers."""
