"""``python -m genericssl`` runs the command line, for environments without the script on PATH."""
import sys

from .cli import main

sys.exit(main())
