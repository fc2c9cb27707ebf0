import sys
from pathlib import Path

# Test helpers (such as the llama.cpp server fixture) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent / "integration"))
# Hand-made rows some integration tests share with the unit tests (test_audit.CLEAN).
sys.path.insert(1, str(Path(__file__).parent / "unit"))
