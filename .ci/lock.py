"""Write requirements.lock, the pip form of poetry.lock (the lock of record), for the platform CI and dev-setup.sh use.

    poetry lock && python .ci/lock.py            # after changing dependencies in pyproject.toml
    python .ci/lock.py --check                   # exit 1 when requirements.lock no longer matches poetry.lock

poetry.lock covers every platform and Python that pyproject.toml allows, with markers; pip wants one version per
package. So each locked package is kept when its markers hold on TARGET with any of the project's extras (the locked
dev environment holds them all), with every file hash poetry recorded. Poetry sometimes locks two versions of a
package under overlapping markers (torch's nvidia-cublas: the one cuda-toolkit pins, and a newer one for Linux on
other CPUs); then the version every locked dependent accepts is kept, as poetry's own installer would choose.
"""

import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.utils import canonicalize_name
from poetry.core.constraints.version import Version, parse_constraint  # poetry's constraint syntax, e.g. "^1.2"

ROOT = Path(__file__).resolve().parent.parent
# The one platform requirements.lock is for: CI's and dev-setup.sh's. Elsewhere `poetry install` reads poetry.lock.
TARGET = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.0",
    "python_version": "3.11",
    "sys_platform": "linux",
}
HEADER = (
    "# Generated from poetry.lock by .ci/lock.py for CPython 3.11 on Linux x86_64, with every extra; do not edit.\n"
    "# Installed by dev-setup.sh: pip install --require-hashes --no-deps -r requirements.lock\n"
)


def _applies(markers: str | None, extras: list[str]) -> bool:
    if not markers:
        return True
    marker = Marker(markers)
    return any(marker.evaluate({**TARGET, "extra": extra}) for extra in ["", *extras])


def _constraints(packages: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Every version constraint (poetry's syntax) that a locked package puts on each of its dependencies."""
    found: dict[str, list[str]] = {}
    for package in packages:
        for name, spec in package.get("dependencies", {}).items():
            for entry in spec if isinstance(spec, list) else [spec]:
                found.setdefault(canonicalize_name(name), []).append(
                    entry if isinstance(entry, str) else entry.get("version", "*")
                )
    return found


def requirements_from_poetry_lock(lock_text: str) -> str:
    """requirements.lock's text for poetry.lock's text."""
    lock = tomllib.loads(lock_text)
    extras = sorted(lock.get("extras", {}))
    chosen: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        if _applies(package.get("markers"), extras):
            chosen.setdefault(canonicalize_name(package["name"]), []).append(package)
    constraints = _constraints([p for candidates in chosen.values() for p in candidates])
    lines = [HEADER.rstrip("\n")]
    for name in sorted(chosen):
        candidates = chosen[name]
        if len(candidates) > 1:
            accepted = [
                p
                for p in candidates
                if all(parse_constraint(c).allows(Version.parse(p["version"])) for c in constraints.get(name, []))
            ]
            if len(accepted) != 1:
                versions = ", ".join(p["version"] for p in candidates)
                raise SystemExit(f"poetry.lock holds {name} {versions} for the target and no single one fits all.")
            candidates = accepted
        package = candidates[0]
        hashes = sorted(f["hash"] for f in package["files"])
        lines.append(f"{name}=={package['version']} \\")
        lines.extend(f"    --hash={digest} \\" for digest in hashes[:-1])
        lines.append(f"    --hash={hashes[-1]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    expected = requirements_from_poetry_lock((ROOT / "poetry.lock").read_text())
    target = ROOT / "requirements.lock"
    if "--check" in sys.argv[1:]:
        if target.read_text() != expected:
            raise SystemExit("requirements.lock does not match poetry.lock; run: python .ci/lock.py")
        return
    target.write_text(expected)
    print(f"wrote {expected.count('==')} pins to requirements.lock")


if __name__ == "__main__":
    main()
