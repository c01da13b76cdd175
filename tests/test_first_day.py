"""The first day from any folder: the default input.txt is the one beside the scripts, a run from another folder
says where it writes, and a refused run leaves nothing behind."""

import os
import urllib.error
import urllib.request

import pytest
import torch
from conftest import ROOT, SCRIPTS, TINY, import_script, run_in_process

import plumbing


@pytest.fixture
def offline(monkeypatch):
    """No network: a download would fail, loudly."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.usefixtures("offline")
def test_a_default_run_from_another_folder_trains_on_the_input_txt_beside_the_scripts(script, tmp_path, capsys,
                                                                                      monkeypatch):
    if script == "gpt2":  # its token file goes beside the text: here, into this test's folder instead
        gpt2, paths = import_script("gpt2"), import_script("gpt2").token_cache_paths
        monkeypatch.setattr(gpt2, "token_cache_paths", lambda path, out_dir, vocab=None: paths(
            str(tmp_path / os.path.basename(path)), out_dir, vocab))
    elsewhere = tmp_path / "my folder"
    elsewhere.mkdir()
    argv = [*TINY[script], "--eval_train_windows=8", f"--out_dir=out/{script}"]  # the default --input_file
    code, out, err = run_in_process(script, argv, capsys, monkeypatch, cwd=elsewhere)
    assert code == 0, err
    assert f"writing in {elsewhere / 'out' / script} (--out_dir is relative to the folder you run in)" in out
    saved = torch.load(elsewhere / "out" / script / "ckpt.pt", weights_only=True)
    assert len(saved["chars"]) == 65  # tiny Shakespeare's: the repository's input.txt, not a download
    assert saved["config"]["input_file"] == "input.txt"  # and the printed commands stay as typed
    assert not (elsewhere / "input.txt").exists()


def test_a_run_in_the_scripts_folder_says_nothing_of_where_it_writes(tmp_path, capsys, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text("abcdefghij" * 50, encoding="utf-8")
    argv = [*TINY["bigram"], f"--input_file={text}", f"--out_dir={tmp_path / 'out'}"]
    code, out, err = run_in_process("bigram", argv, capsys, monkeypatch, cwd=ROOT)
    assert code == 0, err
    assert "writing in" not in out


def test_the_default_input_txt_names_the_file_beside_the_scripts_and_other_paths_the_working_folders(tmp_path,
                                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plumbing.check_input_file("input.txt") == str(ROOT / "input.txt")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.txt").write_text("ab" * 100, encoding="utf-8")
    assert plumbing.check_input_file(os.path.join("data", "input.txt")) == os.path.join("data", "input.txt")
    monkeypatch.chdir(ROOT)
    assert plumbing.check_input_file("input.txt") == "input.txt"  # from the scripts' folder, as typed


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_refused_run_creates_nothing(script, tmp_path, capsys, monkeypatch):
    argv = [*TINY[script], "--input_file=nope.txt", f"--out_dir={tmp_path / 'out' / 'notes'}"]
    code, _, err = run_in_process(script, argv, capsys, monkeypatch, cwd=tmp_path)
    assert code == 2, err
    assert err.strip() == "error: input file nope.txt does not exist; pass --input_file=PATH to a UTF-8 text file"
    assert list(tmp_path.iterdir()) == []
