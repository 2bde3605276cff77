"""python -m raytasks.cli: the `raytasks` command, where its script is not on PATH (a
cluster job's working directory)."""

from raytasks.cli import main

main()
