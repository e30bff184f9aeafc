import sys
from importlib.metadata import version

from phrasebook import banner, phrases, phrases_size


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    book = phrases()
    print(banner().strip())
    print("phrasebook %s, %d languages, %d bytes"
          % (version("phrasebook"), len(book), phrases_size()))
    for lang in argv or sorted(book):
        if lang not in book:
            print("unknown language: %s" % lang, file=sys.stderr)
            return 2
        print("%s: %s" % (lang, book[lang]))
    return 0
