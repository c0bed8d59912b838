from mm_live.cli import main
from mm_live.pipelines.demo import run_demo


def test_demo_synthesises_decodes_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MM_LIVE_REAL_DATA", raising=False)
    rows = run_demo(tmp_path / "out", seed=1, streams=1, seconds=8.0)
    assert [r["steps"] for r in rows] == [8]
    assert rows[0]["frames"] == "8x1x3x224x224" and rows[0]["audio steps"] == "8/8"
    inside, outside = map(float, rows[0]["ctr in/out hl"].split("/"))
    assert inside > outside
    assert "s0000" in capsys.readouterr().out
    assert (tmp_path / "out" / "synth" / "manifest.jsonl").is_file()


def test_demo_cli_refuses_a_foreign_output_folder(tmp_path, capsys):
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "mm-live: error:" in capsys.readouterr().err
    assert (tmp_path / "synth" / "precious.txt").read_text() == "keep me"
