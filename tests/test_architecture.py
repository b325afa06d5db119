"""The house rules of the code, checked: imports run one way, argparse stays in the CLI, no module
reaches into another's private names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mobilenet_keras", "tflite")
# The MediaPipe script runs in its own interpreter, outside the package; it has its own argv.
ARGPARSE_ALLOWED = {"mobilenet_keras/app/cli.py", "mobilenet_keras/deploy/mediapipe_metadata.py"}


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


def _imported_modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.module, alias.name


def test_import_linter_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]'")
    result = subprocess.run([lint, "--config", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_tfmot_contract_covers_every_module_but_optimize():
    # a module left off the contract's list could import tfmot unnoticed (eight of the root modules were left off once)
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["importlinter:contract:tfmot"]["source_modules"].split())
    modules = {".".join(Path(name).with_suffix("").parts[:2]) for name, _ in _sources()}
    modules = {m for m in modules if m not in ("mobilenet_keras.__init__", "mobilenet_keras.__main__",
                                               "mobilenet_keras.optimize")}
    # a package listed covers its modules: tflite's files are one entry
    uncovered = {m for m in modules if not any(m == entry or m.startswith(entry + ".") for entry in listed)}
    assert not uncovered, f"add to setup.cfg's tfmot contract: {sorted(uncovered)}"


def test_argparse_only_in_the_cli():
    users = {name for name, tree in _sources() if any(m == "argparse" for m, _ in _imported_modules(tree))}
    assert users <= ARGPARSE_ALLOWED, f"argparse imported outside the CLI: {sorted(users - ARGPARSE_ALLOWED)}"


def test_no_module_imports_another_modules_private_name():
    offences = []
    for name, tree in _sources():
        for module, imported in _imported_modules(tree):
            if not module.startswith(PACKAGES):
                continue
            parts = module.split(".") + ([imported] if imported else [])
            private = [p for p in parts if p.startswith("_") and not p.startswith("__")]
            if private:
                offences.append(f"{name}: {module}.{imported or ''}")
    assert not offences, offences


def test_importing_the_cli_imports_no_tensorflow_or_keras():
    code = ("import sys, mobilenet_keras, tflite, mobilenet_keras.app.cli; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_python_line_is_longer_than_the_limit():
    """setup.cfg's [flake8] max-line-length (what editors read) holds for every Python file."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    limit = config.getint("flake8", "max-line-length")
    long = [f"{path.relative_to(ROOT).as_posix()}:{number} ({len(line)} characters)"
            for folder in ("mobilenet_keras", "tflite", "tests", "benchmarks")
            for path in sorted((ROOT / folder).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > limit]
    assert not long, f"lines over {limit} characters: " + ", ".join(long)
