import sys
from pathlib import Path

# Test helpers (such as the llama.cpp server fixture) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent / "integration"))
