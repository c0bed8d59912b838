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


def test_not_built_subcommands_exit_2_with_one_line(capsys):
    for argv in (["export-index"], ["search"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("mm-live: error:") and "not built yet" in err
        assert err.count("\n") == 1 and "Traceback" not in err
