"""Writing a benchmark's table into benchmarks/RESULTS.md, with machine, versions and date."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def versions() -> str:
    from importlib.metadata import version

    names = ("tensorflow", "keras", "ai-edge-litert", "tf-keras", "tensorflow-model-optimization")
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001 - a missing optional package is simply not listed
            pass
    return ", ".join(found)


def write_section(name: str, title: str, body: str, command: str | None = None) -> None:
    """Replace (or append) the section `name` of RESULTS.md; `command` (default `python
    benchmarks/NAME.py`) is the command line that made it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- {name}:start -->\n## {title}\n\n"
             f"Measured {stamp} on {machine()}; {versions()}.\n"
             f"Command: `{command or f'python benchmarks/{name}.py'}`\n\n{body.rstrip()}\n<!-- {name}:end -->\n")
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by the scripts in this folder; run by hand.\n\n"
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->\n", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    RESULTS.write_text(text)
