"""`python -m iqa_factory COMMAND ...`: the `iqa-factory` command."""

import sys

from iqa_factory.cli import main

sys.exit(main())
