"""One base for every error that bad input raises: its message already names the file, the
flag or the setting to change, so the command line shows it as one line (raytasks.cli)."""


class RaytasksError(ValueError):
    """Bad input: a file, a flag, a setting or a state the command cannot work with."""
