from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lineage.dvchash import directory_md5
from lineage.gitops import dvc_out_md5


def test_directory_md5_matches_what_dvc_add_records(tmp_path: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--quiet"], cwd=tmp_path, check=True, env=env
    )
    data = tmp_path / "dataset"
    (data / "train" / "a").mkdir(parents=True)
    (data / "train" / "a" / "x.png").write_bytes(b"\x89PNG fake")
    (data / "train" / "b.txt").write_text("b\n")
    (data / "manifest.csv").write_text("record_id\n1\n")
    subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", "dataset"],
        cwd=tmp_path,
        check=True,
        env=env,
    )
    md5, nfiles, _ = dvc_out_md5(tmp_path / "dataset.dvc")
    assert nfiles == 3
    assert directory_md5(data) == md5
    (data / "train" / "b.txt").write_text("tampered\n")
    assert directory_md5(data) != md5
