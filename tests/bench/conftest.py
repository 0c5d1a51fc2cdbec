"""The benches live in the repository's `bench/` (not installed): make them importable for their tests."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
