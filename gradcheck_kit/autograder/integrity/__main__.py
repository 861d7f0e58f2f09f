"""Run the integrity report from a terminal: ``python -m gradcheck_kit.autograder.integrity FOLDER``."""

import sys

from gradcheck_kit.autograder.integrity.command import main

if __name__ == "__main__":
    sys.exit(main())
