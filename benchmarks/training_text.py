"""The text the locally built tokenizers are trained on: this Python's standard-library sources.

One implementation for the benchmark model (benchmarks/bench_model.py) and the tests' tiny
checkpoints (tests/support/checkpoints.py, which import this module as
``benchmarks.training_text``).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path


def stdlib_lines(limit_bytes: int) -> list[str]:
    """Non-empty lines of the standard library's top-level .py files, in sorted file order (the
    same every run), stopping after the first file that takes the total past ``limit_bytes``."""
    lines: list[str] = []
    size = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            if line.strip():
                lines.append(line)
                size += len(line)
        if size > limit_bytes:
            break
    return lines
