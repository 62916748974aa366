import json

from PIL import Image

from tango_prune.cli import main


def test_demo_writes_png_and_summary(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--frames", "8", "--dim", "32", "--subset", "3"]) == 0
    out = capsys.readouterr().out
    assert "kept:" in out and "segments:" in out
    # part 2: the shipped model answered a decoded mp4 with and without pruning
    assert "all tokens: answer" in out and "tango @ 0.1: answer" in out
    assert "held-out questions 0..2 (3 questions" in out and "/3 correct" in out
    assert (tmp_path / "testbed" / "demo.mp4").stat().st_size > 0
    assert (tmp_path / "testbed" / "kept_tokens.png").stat().st_size > 0
    img = Image.open(tmp_path / "kept_tokens.png")
    assert img.size[0] > 100 and img.size[1] > 50
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["total"] == 8 * 14 * 14 and 0 < summary["kept"] < summary["total"]
    assert sum(summary["by_kind"].values()) == summary["kept"]


def test_demo_bad_retention_is_a_clean_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--retention", "2"]) == 2
    assert main(["demo", "--out", str(tmp_path), "--subset", "0"]) == 2
    assert "retention" in capsys.readouterr().err
