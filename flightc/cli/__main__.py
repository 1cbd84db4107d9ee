"""``python -m flightc.cli``: the same as the ``flightc`` command."""
import sys

from flightc.cli import main

sys.exit(main())
