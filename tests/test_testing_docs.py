"""docs/testing.md: the pytest example users copy passes, as a file of its own, under pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "testing.md"
#: The block users copy: the ```python block whose first line names the file to save it as.
EXAMPLE = re.compile(r"^```python\n# test_bot\.py\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


def copyable_example() -> str:
    match = EXAMPLE.search(PAGE.read_text(encoding="utf-8"))
    assert match is not None, "docs/testing.md lost its `# test_bot.py` example"
    return match["code"]


def test_the_copyable_pytest_example_passes(tmp_path: Path):
    """Saved as test_bot.py in an empty directory, the page's example passes under pytest."""
    (tmp_path / "test_bot.py").write_text(copyable_example(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("QUICKCHAT_API_TOKEN", "QUICKCHAT_API_KEY", "QUICKCHAT_SCENARIO_ID"):
        env.pop(name, None)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "test_bot.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b5 passed\b", result.stdout), result.stdout
