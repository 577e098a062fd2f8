"""`python -m ember ...` runs the command line (see ember/cli.py)."""
import sys

from ember.cli import main

sys.exit(main())
