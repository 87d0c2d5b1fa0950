"""``python -m bench``: what ``bench/run`` runs."""

import sys

from .run import main

sys.exit(main())
