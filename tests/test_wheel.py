"""Tierflow as a user installs it: the built wheel, plain pip, a fresh virtualenv beside Airflow, a DAG of theirs.

Not through uv's lock: pip resolves the wheel's declared ranges. On Python 3.12 every dependency is
held at the lowest version ``pyproject.toml`` allows (a constraints file made from its ``>=``
bounds, Airflow 3.2.0 among them); on Python 3.13 pip takes the newest it finds. In each, a
user's DAG from outside the repository (``tests/external/user_staging.py``), importing only
``pipelines.operators``, probes a tier and stages a published dataset between tiers named
``shared`` and ``scratch``; the staged files are checked with hashlib, not with Tierflow's code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
USER_DAG = REPO / "tests" / "external" / "user_staging.py"
PIP_TIMEOUT_S = 1200


def python(version: str) -> str:
    """A CPython of ``version`` (pyenv's, as .ci/run installs it), or a clear failure."""
    found = shutil.which(f"python{version}")
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(root.glob(f"{version}.*"), reverse=True):
        if (candidate / "bin" / "python").exists():
            found = str(candidate / "bin" / "python")
            break
    if not found:
        pytest.fail(f"Python {version} is not installed (pyenv install {version}; .ci/run does it)")
    return found


def lower_bounds() -> list[str]:
    """``name==lowest`` for every runtime dependency of pyproject.toml (its ``>=`` bound)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = []
    for dep in deps:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)", dep)
        assert m, f"pyproject.toml: dependency {dep!r} has no lower bound"
        pins.append(f"{m.group(1)}=={m.group(2)}")
    return pins


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("_tierflow")
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    builder = out / "builder"
    subprocess.run([python("3.12"), "-m", "venv", str(builder)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    run([str(builder / "bin" / "pip"), "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)], env, out)
    (built,) = out.glob("tierflow-*.whl")
    return built


@pytest.mark.parametrize(
    ("version", "lowest"),
    [pytest.param("3.12", True, id="py3.12-lowest-bounds"), pytest.param("3.13", False, id="py3.13-newest")],
)
def test_wheel_installs_with_pip_beside_airflow_and_runs_a_users_dag(
    wheel: Path, tmp_path: Path, version: str, lowest: bool
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([python(version), "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AIRFLOW", "TIERFLOW"))}
    env |= {
        "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "TIERFLOW_CONFIG": str(tmp_path / "tiers.toml"),
        "TIERFLOW_HOME": str(tmp_path / "state"),
    }
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)]
    if lowest:
        (tmp_path / "lowest.txt").write_text("\n".join(lower_bounds()) + "\n")
        pip += ["-c", str(tmp_path / "lowest.txt")]
    run(pip, env, tmp_path, timeout=PIP_TIMEOUT_S)
    versions = run([str(venv / "bin" / "pip"), "list", "--format=freeze"], env, tmp_path).stdout
    installed = {
        canonicalize_name(n): v for n, v in (line.split("==", 1) for line in versions.splitlines() if "==" in line)
    }
    if lowest:
        for pin in lower_bounds():
            name, low = pin.split("==")
            got = installed[canonicalize_name(name)]
            assert Version(got) == Version(low), f"{name}: {got} installed, {low} asked"
    else:
        assert installed["apache-airflow"].startswith("3.")
    where = run([str(venv / "bin" / "python"), "-c", "import pipelines; print(pipelines.__file__)"], env, tmp_path)
    assert str(venv) in where.stdout, f"pipelines imported from {where.stdout} (not the installed wheel)"

    (tmp_path / "dags").mkdir()
    shutil.copy(USER_DAG, tmp_path / "dags" / USER_DAG.name)
    (tmp_path / "tiers.toml").write_text(
        f"""
[[tier]]
name = "shared"
kind = "pfs"
url = "file://{tmp_path / "lustre"}"
capacity = "1 GB"
[tier.bandwidth]
read = "500 MB/s"
write = "400 MB/s"
latency = "1 ms"
metadata_ops = "2000/s"
max_streams = 8

[[tier]]
name = "scratch"
kind = "nvme"
url = "file://{tmp_path / "localssd"}"
capacity = "1 GB"
[tier.bandwidth]
read = "1 GB/s"
write = "800 MB/s"
latency = "0.1 ms"
metadata_ops = "10000/s"
max_streams = 8
"""
    )
    for d in ("lustre", "localssd"):
        (tmp_path / d).mkdir()
    source = tmp_path / "corpus"
    for i in range(12):
        (source / f"part-{i % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"part-{i % 3}" / f"{i:03d}.jsonl").write_bytes(os.urandom(1000 + 977 * i))
    tierflow = str(venv / "bin" / "tierflow")
    run(
        [tierflow, "datasets", "publish", str(source), "--name", "corpus", "--version", "v1", "--tier", "shared"],
        env,
        tmp_path,
    )
    run([str(venv / "bin" / "airflow"), "db", "migrate"], env, tmp_path)
    result = run([str(venv / "bin" / "python"), str(tmp_path / "dags" / USER_DAG.name)], env, tmp_path, timeout=900)
    assert "user_staging: success" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    staged = tmp_path / "localssd" / "datasets" / "corpus" / "v1"
    assert (staged / "_tierflow_commit.json").is_file()
    assert tree(staged) == tree(source)
    listing = run([tierflow, "datasets", "ls", "--tier", "scratch"], env, tmp_path).stdout
    assert re.search(r"^scratch\s+corpus\s+v1\s+committed", listing, re.M), listing
