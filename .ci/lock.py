"""Write requirements.lock, the pip form of poetry.lock (the lock of record), for installing without Poetry (README).

    poetry lock && python .ci/lock.py            # after changing dependencies in pyproject.toml
    python .ci/lock.py --check                   # exit 1 when requirements.lock no longer matches poetry.lock

poetry.lock covers every platform and Python that pyproject.toml allows, with markers; pip wants one version per
package. So each locked package is kept when its markers hold on TARGET with any of the project's extras (the locked
dev environment holds them all), with every file hash poetry recorded.

Poetry can lock two versions of one package under markers that both hold on one machine: it did for torch's cuBLAS
(the version cuda-toolkit pins, and the newest one for "the rest of Linux" under a marker that held on x86_64 too),
and `poetry install` then installs both, the last one winning. Both commands refuse such a lock, checked on every
platform in PLATFORMS, and name the package; pinning it in pyproject.toml's [dependency-groups] and re-locking fixes it.
"""

import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
_SYSTEMS = {"Linux": ("linux", "posix"), "Darwin": ("darwin", "posix"), "Windows": ("win32", "nt")}


def environment(system: str, machine: str, python: str) -> dict[str, str]:
    """The PEP 508 marker values of CPython `python` (e.g. "3.11") on `system` ("Linux", "Darwin", "Windows")."""
    sys_platform, os_name = _SYSTEMS[system]
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": os_name,
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": system,
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": sys_platform,
    }


# The one platform requirements.lock is for, CI's. dev-setup.sh, and every other platform, read poetry.lock.
TARGET = environment("Linux", "x86_64", "3.11")
# Where README says `poetry install` works: the machines torch 2.14 ships wheels for, on each CPython the lock allows.
PLATFORMS = [
    environment(system, machine, python)
    for system, machine in (("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "arm64"), ("Windows", "AMD64"))
    for python in ("3.11", "3.12", "3.13", "3.14")
]
HEADER = (
    "# Generated from poetry.lock by .ci/lock.py for CPython 3.11 on Linux x86_64, all extras/groups; do not edit.\n"
    "# Install: pip install --require-hashes --no-deps -r requirements.lock (dev-setup.sh runs poetry install)\n"
)


def _applies(markers: str | None, env: dict[str, str], extras: list[str]) -> bool:
    if not markers:
        return True
    marker = Marker(markers)
    return any(marker.evaluate({**env, "extra": extra}) for extra in ["", *extras])


def _installed_on(lock: dict[str, Any], env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The locked packages whose markers hold on `env` with any extra, by name: what `poetry install` installs there."""
    extras = sorted(lock.get("extras", {}))
    found: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        if _applies(package.get("markers"), env, extras):
            found.setdefault(canonicalize_name(package["name"]), []).append(package)
    return found


def doubly_locked(lock_text: str) -> list[str]:
    """Each package that poetry.lock holds at two or more versions for one platform in PLATFORMS, with those
    platforms, e.g. "nvidia-cublas 13.1.1.3 and 13.10.0.20 (Linux x86_64 CPython 3.11, ...)"; empty when none."""
    lock = tomllib.loads(lock_text)
    where: dict[str, list[str]] = {}
    for env in PLATFORMS:
        for name, packages in _installed_on(lock, env).items():
            if len(packages) > 1:
                versions = " and ".join(package["version"] for package in packages)
                platform = f"{env['platform_system']} {env['platform_machine']} CPython {env['python_version']}"
                where.setdefault(f"{name} {versions}", []).append(platform)
    return [f"{package} ({', '.join(platforms)})" for package, platforms in where.items()]


def requirements_from_poetry_lock(lock_text: str) -> str:
    """requirements.lock's text for poetry.lock's text; SystemExit when poetry.lock holds a package twice."""
    doubles = doubly_locked(lock_text)
    if doubles:
        raise SystemExit(
            f"poetry.lock holds {'; '.join(doubles)}: `poetry install` would install both. Pin the version its"
            " dependents need in pyproject.toml's [dependency-groups], then run: poetry lock && python .ci/lock.py"
        )
    lines = [HEADER.rstrip("\n")]
    installed = _installed_on(tomllib.loads(lock_text), TARGET)
    for name in sorted(installed):
        (package,) = installed[name]
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
