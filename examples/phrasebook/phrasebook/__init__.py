"""Phrases in a few languages. The phrases are package data read relative to `__file__`; the
banner is package data read through `importlib.resources`, and the phrases file is also found by
path through it, the way certifi hands out its CA bundle."""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def phrases():
    with open(os.path.join(HERE, "data", "phrases.json"), encoding="utf-8") as f:
        return json.load(f)


def banner():
    try:
        from importlib.resources import files
    except ImportError:  # Python 3.8
        from importlib.resources import read_text
        return read_text("phrasebook.data", "banner.txt", encoding="utf-8")
    return files("phrasebook").joinpath("data", "banner.txt").read_text(encoding="utf-8")


def phrases_size():
    """The size of the phrases file, found by path: `as_file` (3.9+) and `path` (3.8) give a real
    file, copied to a temporary one when the package's files are not files."""
    try:
        from importlib.resources import as_file, files
    except ImportError:  # Python 3.8
        from importlib.resources import path
        found = path("phrasebook.data", "phrases.json")
    else:
        found = as_file(files("phrasebook.data").joinpath("phrases.json"))
    with found as p:
        return os.path.getsize(p)
