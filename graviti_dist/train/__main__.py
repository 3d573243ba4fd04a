"""``python -m graviti_dist.train CONFIG [--set k=v ...]``: ``graviti train`` (what a Ray job runs).

An entry point only: nothing imports this module, so the CLI's import of the train stage
makes no circle.
"""

import sys

from graviti_dist.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
