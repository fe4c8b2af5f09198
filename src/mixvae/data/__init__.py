"""Data: canonical file formats, downloads with checksums, in-memory splits, 2D samplers."""
from .datasets import BatchStream, Dataset, Split, from_tensors, load_dataset
from .download import resolve_data_dir

__all__ = ["BatchStream", "Dataset", "Split", "from_tensors", "load_dataset", "resolve_data_dir"]
