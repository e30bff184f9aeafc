"""Phrases in a few languages. The phrases are package data read relative to `__file__`; the
banner is package data read through `importlib.resources`."""
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
