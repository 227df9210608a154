"""The built wheel carries what an installed zoo needs (recipes/ as zoo/recipes)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_non_editable_install_finds_its_profiles(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True)
    assert (target / "zoo" / "recipes" / "squad-matrix.yaml").is_file() and (target / "zoo" / "recipes" / "examples").is_dir()
    listing = subprocess.run([sys.executable, "-c", "from zoo.cli import main; raise SystemExit(main(['matrix', 'squad', '--dry-run']))"],
                             cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr
    assert "minilm-l6-squad-s80-l6-kd" in listing.stdout
