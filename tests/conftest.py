import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for p in (str(ROOT), str(TESTS)):  # histream_core as a top-level package; test helpers by name
    if p not in sys.path:
        sys.path.insert(0, p)
