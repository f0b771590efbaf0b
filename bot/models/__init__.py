"""Model loading, quantization, the demo model, training."""
