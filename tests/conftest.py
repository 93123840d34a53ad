import sys
from pathlib import Path

# tests/modelkit.py is a helper module, not a test: make it importable from every test file.
sys.path.insert(0, str(Path(__file__).parent))
