"""The group every command hangs on, and the one-line error every bad input becomes."""

import click

DEBUG = False  # --debug: let the traceback of an expected error through
# one grammar for every command: -h, defaults shown as [default: ...], booleans as flags
SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}


def examples(*lines: str) -> str:
    """An --help epilog: 'Examples:' and the command lines, kept as written (\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def user_errors() -> tuple:
    """The errors bad input raises (raytasks.core.errors): each message already names the
    file or setting."""
    from raytasks.core.errors import RaytasksError

    return (RaytasksError,)


def one_line(e: Exception) -> str:
    if isinstance(e, OSError) and e.filename:
        return (
            f"{e.filename}: {e.strerror or type(e).__name__}; check that the path exists "
            f"and is writable, or choose another one"
        )
    return " ".join(str(e).split())


def old_spelling(flag: str, dest: str, **kwargs):
    """The flag's old name (e.g. --data) as a hidden option merged into `dest`: it keeps
    working, and --help shows one meaning per name."""
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def merged(*args, **values):
            old = values.pop(f"old_{dest}")
            if old:  # a repeatable option adds to the new one's values
                values[dest] = (*values[dest], *old) if kwargs.get("multiple") else old
            return fn(*args, **values)

        return click.option(flag, f"old_{dest}", hidden=True, **kwargs)(merged)

    return decorate


class Group(click.Group):
    """Turns the project's expected errors (and unwritable paths) into one line, exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            if e.ctx is None:  # already one line (an inner group made it so)
                raise
            path = e.ctx.command_path
            raise click.UsageError(f"{e.format_message()} (see '{path} -h')") from None
        except click.ClickException:
            raise
        except (*user_errors(), OSError) as e:
            if DEBUG:
                raise
            raise click.ClickException(one_line(e)) from None


@click.group(
    cls=Group,
    context_settings=SETTINGS,
    epilog=examples(
        "raytasks data build --scheme all",
        "raytasks train --arch cnn1d --epochs 5",
        "raytasks tune --space cnn1d --samples 4",
        "raytasks evaluate",
    ),
)
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def main(debug):
    """raytasks: train, tune and ship MIT-BIH heartbeat classifiers on Ray.

    Start with `raytasks data build`, then `raytasks train`, `raytasks tune`,
    `raytasks evaluate`. Settings come from config.toml < environment < flags.
    """
    global DEBUG
    DEBUG = debug
