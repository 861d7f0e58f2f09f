"""Record a forward pass and give every intermediate's gradient by its variable name."""
