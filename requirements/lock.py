"""Refresh requirements/constraints.txt: the exact versions `make` installs.

Run through `make lock`. pip resolves the project with every extra `make` installs
(`pip install --dry-run --report`: nothing is built or installed, so llama-cpp-python's
source package is not compiled), and this script writes each resolved package as
``name==version``. The project's own ranges in pyproject.toml stay as they are: they are
what `pip install fineinstructions[...]` users get; this file is what a checkout gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = "embedded,transformers,dev"
HEADER = """\
# The exact versions `make install` (and so `make demo`, `make test`, CI) installs.
# Made by `make lock` ({python}, {platform}) from pyproject.toml's ranges with extras
# [{extras}]; refresh it with `make lock` and commit it. Users who
# `pip install fineinstructions[...]` get pyproject.toml's ranges instead.
"""


def _name(item: dict) -> str:
    return item["metadata"]["name"].lower().replace("_", "-")


def main() -> int:
    torch = sys.argv[1] if len(sys.argv) > 1 else "torch"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), torch, f"{ROOT}[{EXTRAS}]"],
            check=True,
        )
        resolved = json.loads(report.read_text())["install"]
    # A local version label (torch's "+cpu") names one index's build; without it the pin
    # matches that build and PyPI's alike. pip itself is upgraded by `make`, not pinned.
    pins = sorted(
        f"{_name(item)}=={item['metadata']['version'].split('+')[0]}"
        for item in resolved
        if _name(item) not in ("fineinstructions", "pip")
    )
    import platform

    text = HEADER.format(
        python=f"Python {platform.python_version()}",
        platform=f"{platform.system()} {platform.machine()}",
        extras=EXTRAS,
    )
    out = ROOT / "requirements" / "constraints.txt"
    out.write_text(text + "\n".join(pins) + "\n")
    print(f"wrote {out.relative_to(ROOT)}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
