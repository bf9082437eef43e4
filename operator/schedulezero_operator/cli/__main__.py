"""``python -m schedulezero_operator.cli``: the kubectl plugin without installing it."""

import sys

from .plugin import main

sys.exit(main())
