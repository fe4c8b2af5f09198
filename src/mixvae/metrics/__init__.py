"""Evaluation metrics: they read models and data, never the training loop."""
