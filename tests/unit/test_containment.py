"""Paths named by data never leave their root: crafted names and symlinks are refused, with
the entry named, before anything is read or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lineage import manifest
from lineage.errors import LineageError
from lineage.paths import PathContainmentError, contained, safe_relpath
from processing.sources import SourceError, load_source, parse_source


@pytest.mark.parametrize(
    ("relpath", "problem"),
    [
        ("../../../x", "climbs out"),
        ("a/../../x", "climbs out"),
        ("/etc/passwd", "is absolute"),
        ("", "is empty"),
        ("a//b", "empty or '.' segment"),
        ("./a", "empty or '.' segment"),
        ("a\\..\\b", "backslash"),
        ("C:/x", "drive letter"),
        ("a\x00b", "NUL"),
    ],
)
def test_crafted_relpaths_are_refused_with_the_entry_named(relpath: str, problem: str) -> None:
    with pytest.raises(PathContainmentError, match=problem) as raised:
        safe_relpath(relpath, "entry 7 of the DVC listing abc.dir")
    assert "entry 7 of the DVC listing abc.dir" in raised.value.message


@pytest.mark.parametrize("relpath", ["a.png", "train/3/17.png", "..a/b..c/x..png", "a b/c"])
def test_plain_relpaths_pass(relpath: str) -> None:
    assert safe_relpath(relpath, "x") == relpath


def test_a_symlink_inside_the_root_that_points_out_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(PathContainmentError, match="through a symbolic link"):
        contained(root, "link/file.png", "row 3")
    assert contained(root, "real/file.png", "row 3") == root / "real" / "file.png"


def test_a_manifest_row_outside_the_dataset_is_refused() -> None:
    text = "record_id,file_path,split,label,sha256\nr1,../outside.png,train,a," + "0" * 64 + "\n"
    with pytest.raises(LineageError, match=r"manifest line 2: path '../outside.png' climbs out"):
        manifest.parse(text)
    absolute = text.replace("../outside.png", "/etc/passwd")
    with pytest.raises(LineageError, match="is absolute"):
        manifest.parse(absolute)


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), "white").save(path)


def test_a_cxr_registry_row_outside_its_root_is_never_read(tmp_path: Path) -> None:
    root = tmp_path / "cxr"
    _png(root / "images" / "1.png")
    _png(tmp_path / "outside" / "x.png")  # exists: the refusal is not "file not found"
    (root / "registry.csv").write_text(
        "patient_id,scan_id,file_path,label,consent_status\n"
        "PAT-1,PAT-1-SCAN-1,images/1.png,normal,granted\n"
        "PAT-2,PAT-2-SCAN-2,../outside/x.png,normal,granted\n"
    )
    with pytest.raises(SourceError, match=r"registry.csv line 3: path '../outside/x.png'"):
        load_source(parse_source(f"cxr:{root}"), tmp_path / "input")


def test_an_imagefolder_symlink_leaving_the_tree_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _png(root / "a" / "1.png")
    _png(tmp_path / "secret" / "2.png")
    (root / "a" / "2.png").symlink_to(tmp_path / "secret" / "2.png")
    with pytest.raises(SourceError, match="outside the source"):
        load_source(parse_source(f"imagefolder:{root}"), tmp_path / "input")
