"""``python -m edgerec`` runs the CLI."""

import sys

from edgerec.cli import main

sys.exit(main())
