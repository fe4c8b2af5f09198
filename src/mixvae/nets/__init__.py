"""Neural networks: tensors in, tensors out. Models wrap their outputs into distributions."""
