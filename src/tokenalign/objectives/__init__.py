"""Training objectives: one module per family, registered by name."""
