"""The deployment package as `azd deploy` builds it: the repository with `.funcignore` applied.

What ships is the repository's tracked files less what `.funcignore` names, matched with gitignore's
rules (pathspec), as azd applies the file to a `host: function` service. The platform's remote build
then installs requirements.txt. Measured here, on request (never in the test suite):

- the first-party files shipped: count, bytes, and the size of their zip (deflate), beside the
  tracked files that would ship without `.funcignore` (azd's defaults leave out only `__pycache__`
  and virtual environments; node_modules too would go from a working tree);
- the runtime requirements, installed with `pip install --target` into a temporary folder (needs the
  package index; `--skip-requirements` leaves it out);
- the import cost of `function_app` from a copy of the shipped files alone: median of fresh processes,
  as shipped (no bytecode in the package: the first-party sources are compiled on import) and with
  their bytecode cached.

    .venv/bin/python -m bench.package [--runs 7] [--skip-requirements]

`tests/test_deployment_package.py` checks the same file list: the product exactly, every module
`function_app.py` imports, and the functions indexed from the copy.
"""

from __future__ import annotations

import argparse
import ast
import modulefinder
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pathspec

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.report import Row, table  # noqa: E402

TARGET = "package = product + requirements only"
# The product: the entry point, the host's configuration, what the remote build installs, and the two
# packages the entry point imports. Anything else in the package is a miss.
PRODUCT_FILES = frozenset({"function_app.py", "host.json", "requirements.txt"})
PRODUCT_PACKAGES = ("handlers/", "responder/")
# The first-party top-level names: what `import` may reach inside the repository.
FIRST_PARTY = ("function_app", "handlers", "responder", "tools", "localdev", "bench", "tests")


def is_product(path: str) -> bool:
    return path in PRODUCT_FILES or path.startswith(PRODUCT_PACKAGES)


def funcignore(root: Path = REPO) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())


def tracked_files(root: Path = REPO) -> list[str]:
    """`git ls-files`: the repository's files as a fresh clone has them (those deleted here left out)."""
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is needed to list the repository's files")
    listed = subprocess.run([git, "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return sorted(path for path in listed.decode().split("\0") if path and (root / path).is_file())


def shipped(paths: Iterable[str], spec: pathspec.GitIgnoreSpec) -> list[str]:
    return sorted(path for path in paths if not spec.match_file(path))


def shipped_files(root: Path = REPO) -> list[str]:
    """What the deployment ships of the repository's tracked files, with `.funcignore` applied."""
    return shipped(tracked_files(root), funcignore(root))


def first_party_imports(root: Path = REPO) -> tuple[dict[str, str], list[str]]:
    """Every first-party module `function_app.py` reaches by import, lazy imports inside functions
    included (modulefinder reads every import statement of the bytecode), as module name → file
    relative to `root`; and the first-party imports it could not find under `root` (modules the
    package would lack). The standard library and site-packages are not looked into."""
    finder = modulefinder.ModuleFinder(path=[str(root)])
    finder.run_script(str(root / "function_app.py"))
    base = root.resolve()
    found = {"function_app": "function_app.py"}
    for name, module in finder.modules.items():
        file: str | None = getattr(module, "__file__", None)  # typeshed's Module doesn't declare it
        if name != "__main__" and file and Path(file).resolve().is_relative_to(base):
            found[name] = Path(file).resolve().relative_to(base).as_posix()
    unresolved = sorted(name for name in finder.badmodules if name.split(".")[0] in FIRST_PARTY)
    return found, unresolved


def dynamic_imports(root: Path, files: Iterable[str]) -> list[str]:
    """Calls of `import_module` or `__import__` in the given Python files: imports modulefinder can't see."""
    found = []
    for path in files:
        if not path.endswith(".py"):
            continue
        for node in ast.walk(ast.parse((root / path).read_text(), path)):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if called in {"import_module", "__import__"}:
                    found.append(f"{path}:{node.lineno}")
    return found


def copy_files(root: Path, files: Iterable[str], destination: Path) -> None:
    for path in files:
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / path, target)


def zipped_size(root: Path, files: Iterable[str]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "package.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as package:
            for path in files:
                package.write(root / path, path)
        return archive.stat().st_size


def requirements_size(root: Path = REPO) -> tuple[int, int]:
    """Bytes and files of requirements.txt installed into an empty folder, as the remote build does."""
    with tempfile.TemporaryDirectory() as target:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", target]
        subprocess.run([*command, "-r", str(root / "requirements.txt")], check=True, capture_output=True)
        files = [path for path in Path(target).rglob("*") if path.is_file()]
        return sum(path.stat().st_size for path in files), len(files)


TIME_THE_IMPORT = """
import sys, time
started = time.perf_counter()
import function_app
elapsed = time.perf_counter() - started
outside = [name for name, module in sys.modules.items()
           if name.split(".")[0] in {"function_app", "handlers", "responder"}
           and not (getattr(module, "__file__", None) or "").startswith(sys.argv[1])]
print(elapsed, len(outside))
"""


def import_seconds(copy: Path, *, write_bytecode: bool) -> float:
    """`import function_app` in a fresh process started in the copy, the app's modules found there
    alone (no PYTHONPATH; the interpreter's site-packages give the requirements)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    completed = subprocess.run(
        [sys.executable, "-c", TIME_THE_IMPORT, str(copy)],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed, outside = completed.stdout.split()
    if int(outside):
        raise RuntimeError(f"{outside} of the app's modules were imported from outside {copy}")
    return float(elapsed)


def import_timings(files: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Fresh processes alternating between two copies of the shipped files: one as shipped (no bytecode,
    none written: every process compiles the first-party sources it imports) and one whose bytecode a
    first process wrote. Alternating puts both series under the same load."""
    with tempfile.TemporaryDirectory() as shipped_copy, tempfile.TemporaryDirectory() as cached_copy:
        copy_files(REPO, files, Path(shipped_copy))
        copy_files(REPO, files, Path(cached_copy))
        import_seconds(Path(cached_copy), write_bytecode=True)  # writes the bytecode next to the sources
        as_shipped, cached = [], []
        for _ in range(runs):
            as_shipped.append(import_seconds(Path(shipped_copy), write_bytecode=False))
            cached.append(import_seconds(Path(cached_copy), write_bytecode=True))
        return as_shipped, cached


def spread(timings: list[float]) -> str:
    return f"{statistics.median(timings) * 1000:.0f} ms ({min(timings) * 1000:.0f}-{max(timings) * 1000:.0f})"


def rows(runs: int = 7, *, requirements: bool = True) -> list[Row]:
    files = shipped_files()
    reached, unresolved = first_party_imports()
    extra = [path for path in files if not is_product(path)]
    missing = sorted(set(reached.values()) - set(files)) + unresolved
    size = sum((REPO / path).stat().st_size for path in files)
    verdict = "ok" if not extra and not missing else "MISSED"
    why = f"; not product: {', '.join(extra[:3])}" if extra else ""
    why += f"; missing: {', '.join(missing[:3])}" if missing else ""
    result = [
        Row(
            "deployment package: first-party files (.funcignore applied)",
            f"{len(files)} files, {size / 1024:.0f} KiB, zip {zipped_size(REPO, files) / 1024:.0f} KiB{why}",
            TARGET,
            verdict,
        )
    ]
    everything = tracked_files()
    result.append(
        Row(
            "deployment package: the tracked files, without .funcignore",
            f"{len(everything)} files, {sum((REPO / path).stat().st_size for path in everything) / 2**20:.1f} MiB",
            "",
        )
    )
    if requirements:
        installed, count = requirements_size()
        result.append(
            Row("deployment package: requirements.txt installed", f"{installed / 2**20:.0f} MiB, {count} files", "")
        )
    as_shipped, cached = import_timings(files, runs)
    result += [
        Row(f"deployment package: import function_app, as shipped (median of {runs})", spread(as_shipped), ""),
        Row(f"deployment package: import function_app, bytecode cached (median of {runs})", spread(cached), ""),
    ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per import timing (at least 5)")
    parser.add_argument("--skip-requirements", action="store_true", help="don't install requirements.txt (offline)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs: at least 5 fresh processes")
    print(table(rows(args.runs, requirements=not args.skip_requirements)))


if __name__ == "__main__":
    main()
