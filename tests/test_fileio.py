import pytest

from mm_live.fileio import atomic_dir, atomic_open, write_json


def test_atomic_open_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_json_and_atomic_dir_swap(tmp_path):
    write_json(tmp_path / "a" / "x.json", {"k": "ü"})
    assert (tmp_path / "a" / "x.json").read_text(encoding="utf-8").strip() == '{\n  "k": "ü"\n}'
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as d:
            (d / "v").write_text("2")
            raise ValueError
    assert (target / "v").read_text() == "1"
    with atomic_dir(target) as d:
        (d / "v").write_text("3")
    assert (target / "v").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "ckpt"]


def test_outputs_get_the_usual_mode_not_0600(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {})
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_atomic_dir_replacement_never_leaves_the_path_missing(tmp_path, monkeypatch):
    """While a directory is replaced, a reader always finds a complete old or new one at the path."""
    import os

    import mm_live.fileio as fileio

    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "v").write_text("old")
    seen = []
    real_replace = os.replace

    def watching_replace(src, dst):
        seen.append(target.is_dir() and (target / "v").is_file())
        real_replace(src, dst)
        seen.append(target.is_dir() and (target / "v").is_file())

    monkeypatch.setattr(fileio.os, "replace", watching_replace)
    real_exchange = fileio._exchange

    def watching_exchange(a, b):
        seen.append(target.is_dir())
        ok = real_exchange(a, b)
        seen.append(target.is_dir() and (target / "v").is_file())
        return ok

    monkeypatch.setattr(fileio, "_exchange", watching_exchange)
    with atomic_dir(target) as d:
        (d / "v").write_text("new")
    assert seen and all(seen)
    assert (target / "v").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
