"""PyTorch models that tf2pt mappings target (imported only when a model is built)."""
