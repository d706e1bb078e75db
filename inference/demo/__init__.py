"""The tiny demo model: synthetic data, tokenizer/model construction and training."""
