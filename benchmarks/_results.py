"""Writing a benchmark's table into benchmarks/RESULTS.md, with machine, versions and date."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def count(minimum: int):
    """An argparse type: a whole number of at least `minimum` (a bad value is argparse's one-line error,
    before any model is built: `--steps 0` made Keras's fit loop run forever)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value
    return parse


def number(minimum: float, above: bool = False, below: float | None = None):
    """An argparse type: a finite number >= `minimum` (> with `above`), and < `below` when given."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < minimum or (above and value == minimum) or (
                below is not None and value >= below):
            bounds = f"{'>' if above else '>='} {minimum:g}" + (f" and < {below:g}" if below is not None else "")
            raise argparse.ArgumentTypeError(f"{text} is not a number {bounds}")
        return value
    return parse


def counts(minimum: int):
    """An argparse type: comma-separated whole numbers, each at least `minimum`."""
    one = count(minimum)

    def parse(text: str) -> list[int]:
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one number")
        return values
    return parse


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


# The instruction sets that decide how fast TensorFlow and XNNPACK run here (int8 dot products, bfloat16,
# AMX tiles); machines of the same name differ in them, so every section names the ones it found.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> str:
    """Which of CPU_FLAGS /proc/cpuinfo lists, and which it doesn't: "avx2, avx512f (no amx_tile, ...)"."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown (no /proc/cpuinfo)"
    present = set(line.split(":", 1)[1].split())
    found = [flag for flag in CPU_FLAGS if flag in present]
    missing = [flag for flag in CPU_FLAGS if flag not in present]
    absent = f" (no {', '.join(missing)})" if found and missing else ""
    return ", ".join(found or ["none of " + ", ".join(CPU_FLAGS)]) + absent


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
             f"Measured {stamp} on {machine()}; CPU flags: {cpu_flags()}; {versions()}.\n"
             f"Command: `{command or f'python benchmarks/{name}.py'}`\n\n{body.rstrip()}\n<!-- {name}:end -->\n")
    text = (RESULTS.read_text() if RESULTS.exists()
            else "# Benchmark results\n\nWritten by the scripts in this folder; run by hand.\n\n")
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->\n", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    from mobilenet_keras.files import write_bytes_atomic

    write_bytes_atomic(RESULTS, text.encode())  # a run killed while writing leaves the old RESULTS.md whole


def run_quietly(main) -> None:
    """`main()` with TensorFlow's own log lines and internal warnings kept out of the output, as the CLI
    keeps them (`mobilenet_keras.app.cli.quiet_runtime`); MOBILENET_KERAS_VERBOSE=1 lets them through."""
    from mobilenet_keras.app.cli import quiet_runtime

    with quiet_runtime(verbose=os.environ.get("MOBILENET_KERAS_VERBOSE") == "1"):
        main()
