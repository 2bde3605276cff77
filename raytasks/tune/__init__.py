"""Search: Ray Tune over searchspaces/, W&B tracking, the team leaderboard."""
