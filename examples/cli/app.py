"""A click CLI with deterministic output.

    app.py greet NAME [--times N] [--shout]
    app.py stats WORD...
    app.py info
"""
import sys
from collections import Counter
from importlib.metadata import version

import click


@click.group()
def cli():
    """Small text tools."""


@cli.command()
@click.argument("name")
@click.option("--times", default=1, show_default=True, type=click.IntRange(1, 10),
              help="How many greetings.")
@click.option("--shout", is_flag=True, help="Upper case.")
def greet(name, times, shout):
    """Greet NAME."""
    line = "Hello, %s!" % name
    for i in range(times):
        click.echo("%d. %s" % (i + 1, line.upper() if shout else line))


@cli.command()
@click.argument("words", nargs=-1, required=True)
def stats(words):
    """Count WORDS and their letters."""
    letters = Counter("".join(words).lower())
    click.echo("words:   %d" % len(words))
    click.echo("longest: %s" % max(words, key=len))
    click.echo("letters: %s" % " ".join("%s=%d" % kv for kv in sorted(letters.items())))


@cli.command()
def info():
    """Versions of what runs this."""
    click.echo("click %s on Python %d.%d" % ((version("click"),) + sys.version_info[:2]))


if __name__ == "__main__":
    cli()
