import subprocess
import sys

from mm_live.cli import main


def test_help_lists_the_subcommands_without_importing_torch():
    code = (
        "import sys, io, contextlib\n"
        "from mm_live.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(buf.getvalue())\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for cmd in ("train", "score", "eval", "export-index", "search", "data", "demo"):
        assert cmd in out
    assert out.strip().endswith("NO-TORCH")


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "mm_live", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("mm-live ")


def test_export_and_search_errors_are_one_line_exit_2(tmp_path, capsys):
    cases = [
        ["export-index", "--checkpoint", str(tmp_path / "no-run"), "--data", str(tmp_path), "--out", str(tmp_path / "i")],
        ["search", "--index", str(tmp_path / "no-index"), "--id", "0"],
        ["search", "--index", str(tmp_path), "--clip", str(tmp_path / "c.mp4")],
    ]
    for argv in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("mm-live: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "i").exists()
