"""The models/ folders: one saved model (saved) and ensembles of them."""
