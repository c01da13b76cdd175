"""Checkpoints saved before plumbing.py existed still sample and resume: the checkpoint format did not change.

tests/fixtures/<script>-before-plumbing.pt: each script's TINY run (conftest) on conftest's TEXT, 20 steps, saved
by the scripts as they were when every script carried its own copy of the plumbing.
"""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import SCRIPTS, TEXT, TINY, eval_lines, run_in_process

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def saved_run(script, tmp_path):
    """A run folder holding the old checkpoint of script, as training left it: out_dir."""
    out_dir = tmp_path / "out" / script
    out_dir.mkdir(parents=True)
    shutil.copyfile(FIXTURES / f"{script}-before-plumbing.pt", out_dir / "ckpt.pt")
    return out_dir


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_saved_before_the_move_samples(script, tmp_path, capsys, monkeypatch):
    out_dir = saved_run(script, tmp_path)
    argv = [*TINY[script], f"--out_dir={out_dir}", "--sample", "--prompt=First", "--max_new_tokens=30"]
    code, out, err = run_in_process(script, argv, capsys, monkeypatch)
    assert code == 0, err
    header, text = out.split("\n", 1)
    assert header == "using device: cpu"
    text = text.removesuffix("\n")
    assert text.startswith("First") and len(text) == len("First") + 30
    assert set(text) <= set(TEXT)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_saved_before_the_move_resumes_with_its_weights_and_step(script, tmp_path, capsys, monkeypatch):
    out_dir = saved_run(script, tmp_path)
    saved = torch.load(out_dir / "ckpt.pt", weights_only=True)
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    argv = [*TINY[script], f"--out_dir={out_dir}", f"--input_file={text}", "--resume", "--max_iters=30"]
    code, out, err = run_in_process(script, argv, capsys, monkeypatch)
    assert code == 0, err
    assert f"resuming from step {saved['step']} (val loss {saved['best_val_loss']:.4f})" in out
    lines = eval_lines(out)
    # the restored weights evaluate to the val loss they were saved with: the same model, exactly
    assert lines[0].startswith(f"step {saved['step']}: ")
    assert lines[0].endswith(f"val loss {saved['best_val_loss']:.4f}")
    assert lines[-1].startswith("step 30: ")
    assert torch.load(out_dir / "ckpt.pt", weights_only=True)["script"] == script
