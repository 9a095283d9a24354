"""Regenerate requirements.lock from the resolved .venv: exact versions with the sha256 of each file pip installs.

    .venv/bin/pip install -e '.[dev]' && .venv/bin/python .ci/lock.py

pip's own installation report carries the hashes the package index publishes, so nothing is downloaded twice and
no index address is written into the lock.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLING = {"pip", "pip-tools", "build", "pyproject-hooks", "wheel", "setuptools"}  # not part of the environment


def main() -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    frozen = subprocess.run([*pip, "freeze", "--exclude-editable"], capture_output=True, text=True, check=True).stdout
    pins = [line for line in frozen.splitlines() if line.split("==")[0].lower().replace("_", "-") not in TOOLING]
    with tempfile.TemporaryDirectory() as tmp:
        pinned, report = Path(tmp) / "pinned.txt", Path(tmp) / "report.json"
        pinned.write_text("\n".join(pins) + "\n")
        install = ["install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet", "--report", str(report)]
        subprocess.run([*pip, *install, "-r", str(pinned)], check=True)
        items = json.loads(report.read_text())["install"]
    lines = [
        "# The locked environment (runtime + dev extras) for Linux x86_64, CPython 3.11; installed by dev-setup.sh",
        "# with `pip install --require-hashes --no-deps -r requirements.lock`. Regenerate: python .ci/lock.py",
    ]
    for item in sorted(items, key=lambda i: i["metadata"]["name"].lower()):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{digest}")
    (ROOT / "requirements.lock").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(items)} pins to requirements.lock")


if __name__ == "__main__":
    main()
