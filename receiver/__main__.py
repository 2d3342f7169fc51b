"""``python -m receiver`` is ``llm-broadcast-relay serve``."""

import sys

from receiver.cli import main

sys.exit(main(sys.argv[1:] or ["serve"]))
