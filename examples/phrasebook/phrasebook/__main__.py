import sys

from phrasebook.cli import main

sys.exit(main())
