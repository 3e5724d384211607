import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args, env=None, cwd=ROOT, timeout=60):
    """Run ``python -m ...`` the way a user would, returning the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def write_yaml(tmp_path):
    def write(text: str, name: str = "overlay.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write
