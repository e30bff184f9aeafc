"""Prints a greeting, then each argument; `-` echoes stdin in upper case, `--exit=N` exits N."""
import sys


def main(argv):
    print("Hello from Python %d.%d!" % sys.version_info[:2])
    for arg in argv[1:]:
        if arg == "-":
            data = sys.stdin.read()
            print("stdin: %d lines" % len(data.splitlines()))
            sys.stdout.write(data.upper())
        elif arg.startswith("--exit="):
            return int(arg.split("=", 1)[1])
        else:
            print("arg: " + arg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
