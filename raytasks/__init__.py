"""raytasks: train, tune and ship MIT-BIH heartbeat classifiers on Ray."""

import os

# Set before anything imports ray (it reads both at import): never post usage stats, and
# speak token auth, which Ray 2.60 clusters require of their clients.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
