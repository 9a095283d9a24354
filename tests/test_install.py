"""poetry.lock is the lock of record (dev-setup.sh installs it); requirements.lock, for pip, must be its pip form."""

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest
from packaging.markers import Marker

ROOT = Path(__file__).resolve().parent.parent


def _lock_module():
    spec = importlib.util.spec_from_file_location("ci_lock", ROOT / ".ci" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_lock_is_poetry_lock_in_pip_form() -> None:
    expected = _lock_module().requirements_from_poetry_lock((ROOT / "poetry.lock").read_text())
    assert (ROOT / "requirements.lock").read_text() == expected, (
        "requirements.lock has drifted from poetry.lock; run: python .ci/lock.py"
    )


def test_lock_pins_what_this_machine_installs_and_the_ray_extra() -> None:
    pins = dict(re.findall(r"^([\w.-]+)==(\S+) \\$", (ROOT / "requirements.lock").read_text(), flags=re.MULTILINE))
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["ray"].startswith("2.") and "pyarrow" in pins  # ray[data]: the dev environment CI tests Ray in
    # torch 2.14 requires setuptools >= 77.0.3; a venv's own 65.5 left `pip check` failing.
    assert tuple(int(part) for part in pins["setuptools"].split(".")[:2]) >= (77, 0)


def test_committed_install_files_name_no_package_index() -> None:
    for name in ("pyproject.toml", "poetry.lock", "requirements.lock", "dev-setup.sh", ".ci/run", ".ci/lock.py"):
        text = (ROOT / name).read_text()
        assert not re.search(r"https?://|file://|index-?url|\[\[tool\.poetry\.source\]\]", text), name


def _package(name: str, version: str, markers: str | None = None, dependencies: str = "") -> str:
    marker_line = f"markers = {markers!r}\n" if markers else ""
    deps = f"\n[package.dependencies]\n{dependencies}\n" if dependencies else ""
    return (
        f'[[package]]\nname = "{name}"\nversion = "{version}"\n{marker_line}'
        f'files = [{{file = "{name}-{version}.whl", hash = "sha256:{name}{version}"}}]\n{deps}\n'
    )


def test_one_version_per_package_for_the_target_with_every_extra() -> None:
    lock = "".join(
        [
            _package("plain", "1.0"),
            _package("windows-only", "1.0", 'sys_platform == "win32"'),
            _package("ray-extra-only", "1.0", 'extra == "ray"'),
            _package("dev-on-linux", "1.0", 'sys_platform == "darwin" or extra == "dev" and sys_platform == "linux"'),
            # Disjoint markers: only the one for CPython 3.11.
            _package("by-python", "2.4", 'python_version < "3.14"'),
            _package("by-python", "2.5", 'python_version >= "3.14"'),
            '[extras]\ndev = ["dev-on-linux"]\nray = ["ray-extra-only"]\n',
        ]
    )
    body = _lock_module().requirements_from_poetry_lock(lock).split("\n", 2)[2]
    expected = """\
        by-python==2.4 \\
            --hash=sha256:by-python2.4
        dev-on-linux==1.0 \\
            --hash=sha256:dev-on-linux1.0
        plain==1.0 \\
            --hash=sha256:plain1.0
        ray-extra-only==1.0 \\
            --hash=sha256:ray-extra-only1.0
        """
    assert body == textwrap.dedent(expected)


def _platforms_holding_both(first: str | None, second: str | None) -> set[str]:
    """Reference for doubly_locked: the PLATFORMS (with any extra) on which both markers hold, evaluated one by one."""
    found = set()
    for env in _lock_module().PLATFORMS:
        holds = [
            marker is None or any(Marker(marker).evaluate({**env, "extra": extra}) for extra in ("", "dev"))
            for marker in (first, second)
        ]
        if all(holds):
            found.add(f"{env['platform_system']} {env['platform_machine']} CPython {env['python_version']}")
    return found


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # poetry 2.5's own lock for torch 2.14.1: the pinned cuBLAS, and the newest one for "the rest of Linux".
        (
            '(sys_platform == "win32" and platform_machine == "AMD64" or sys_platform == "linux" and '
            '(platform_machine == "aarch64" or platform_machine == "x86_64")) and platform_system == "Linux"',
            'platform_system == "Linux"',
        ),
        (None, 'sys_platform == "darwin"'),  # not on CI's platform, still a broken `poetry install` on a Mac
        ('python_version >= "3.12"', 'extra == "dev"'),  # both only with an extra that --all-extras installs
        ('python_version < "3.14"', 'python_version >= "3.14"'),  # disjoint: fine
        ('sys_platform == "win32"', 'sys_platform == "linux"'),  # disjoint: fine
    ],
)
def test_a_package_locked_twice_for_one_platform_is_refused(first: str | None, second: str | None) -> None:
    lock = _package("twice", "1.0", first) + _package("twice", "2.0", second) + '[extras]\ndev = ["twice"]\n'
    expected = _platforms_holding_both(first, second)
    found = _lock_module().doubly_locked(lock)
    if not expected:
        assert found == []
        return
    assert len(found) == 1 and found[0].startswith("twice 1.0 and 2.0 (")
    assert set(found[0].removeprefix("twice 1.0 and 2.0 (").removesuffix(")").split(", ")) == expected
    with pytest.raises(SystemExit, match="poetry.lock holds twice 1.0 and 2.0 .*`poetry install` would install both"):
        _lock_module().requirements_from_poetry_lock(lock)


def test_poetry_lock_holds_one_version_of_each_package_per_platform() -> None:
    assert _lock_module().doubly_locked((ROOT / "poetry.lock").read_text()) == []
