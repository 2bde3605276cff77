"""The team's Ray cluster: local processes, jobs, pull."""
