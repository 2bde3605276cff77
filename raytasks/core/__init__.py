"""Shared foundations: constants, errors, paths, settings files, team storage, the Ray
connection, metrics."""
