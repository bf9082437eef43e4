"""``python -m schedulezero_operator.migrate``: the migration tool without installing it."""

import sys

from .command import main

sys.exit(main())
