"""Token reward models: the model, batching, aggregation, preference losses, learning and scoring."""
