"""Evaluation of saved models on built splits or files into results/."""
