"""python -m raytasks.tune: a search, as a cluster job runs it (the same as `raytasks tune`).

ray job submit --working-dir . -- python -m raytasks.tune --space gru --samples 20
"""

from raytasks.cli import tune_cmd

tune_cmd()
