"""The wheel installs one import name, ``driftline``; the layer folders become its subpackages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("collectors", "streams", "detectors", "schemas", "dashboards")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(out), str(ROOT)),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("driftline-*.whl")
    return built


def test_wheel_has_one_top_level_name_and_its_data_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "driftline",
        wheel.name.split("-py")[0] + ".dist-info",
    }
    for layer in LAYERS:
        assert f"driftline/{layer}/__init__.py" in names
    assert "driftline/schemas/ddl/0001_init.sql" in names
    assert "driftline/schemas/queries/cost_by_workflow.sql" in names
    assert "driftline/collectors/otelcol.yaml" in names


def test_installed_wheel_imports_driftline_layers_and_no_bare_names(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import importlib, importlib.util, sys\n"
        f"layers = {LAYERS!r}\n"
        "for name in layers:\n"
        "    assert importlib.util.find_spec(name) is None, f'{name} is importable bare'\n"
        "import driftline.schemas, driftline.store.queries as q\n"
        f"assert driftline.schemas.__file__.startswith({str(site)!r}), driftline.schemas.__file__\n"
        "assert 'cost_by_workflow' in q.query_names()\n"
        "print('ok')\n"
    )
    # -P: the working directory is not put on sys.path; the wheel's copy comes first.
    result = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        cwd=elsewhere,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def locked_pins(path: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a lock file."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            pins[canonicalize_name(name.split("[")[0])] = version
    return pins


def test_locks_pin_every_declared_dependency_within_its_range() -> None:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = locked_pins(ROOT / "requirements.lock")
    runtime = locked_pins(ROOT / "requirements.runtime.lock")
    for spec, locks in [
        *((s, (dev, runtime)) for s in project["dependencies"]),
        *((s, (dev,)) for s in project["optional-dependencies"]["dev"]),
    ]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        for lock in locks:
            assert name in lock, f"{name} is not in a lock: run `make lock`"
            assert requirement.specifier.contains(lock[name], prereleases=True), (
                f"{name}=={lock[name]} is outside {requirement.specifier}: run `make lock`"
            )
    # The image runs what the tests ran: every runtime pin equals the dev lock's.
    assert {n: v for n, v in runtime.items() if dev.get(n) != v} == {}


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their base name (the test folders are not packages):
    two ``test_x.py`` in different folders stop the whole suite at collection."""
    tests = Path(__file__).resolve().parents[1]
    seen: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}


def test_every_integration_module_is_marked() -> None:
    """``make test-unit`` (-m "not integration") must not start brokers, and
    ``make test-integration`` must not skip a module silently."""
    folder = Path(__file__).resolve().parents[1] / "integration"
    unmarked = [
        path.name
        for path in sorted(folder.glob("test_*.py"))
        if "pytestmark = pytest.mark.integration" not in path.read_text()
    ]
    assert unmarked == []
