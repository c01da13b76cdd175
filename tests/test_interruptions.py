"""Runs that stop early: Ctrl-C, a kill during a checkpoint write, a loss that blows up, and resuming exactly.
plumbing.py's Run handles the stops for every script: each is tested once, on plumbing directly or through bigram.py
(gpt2.py for its own float16). Resuming exactly depends on each script's own loop and random state: it is tested per
script."""

import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from conftest import ROOT, SCRIPTS, ctrl_c_after, eval_lines, import_script, run_in_process, tiny_args

import plumbing

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(autouse=True)
def children_receive_ctrl_c():
    """Children inherit an ignored SIGINT (pytest started in the background); a user's terminal never ignores it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@contextmanager
def running(script, argv, folder):
    """`python script.py argv` in its own process, run in folder with its output in folder/stdout.txt, stderr.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / f"{script}.py"), *argv], cwd=folder, env=ENV, stdout=out,
                                stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def finish(proc, folder, timeout=30):
    """Wait for the process to end: (exit code, stdout, stderr)."""
    code = proc.wait(timeout=timeout)
    return code, (folder / "stdout.txt").read_text(), (folder / "stderr.txt").read_text()


def wait_until(condition, proc, timeout=30):
    """Poll condition() until it holds, failing if the process ends first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended (exit code {proc.returncode}) before the condition held"
        assert time.monotonic() < deadline, f"the condition did not hold within {timeout} s"
        time.sleep(0.0005)  # a short nap: the condition may hold for a few milliseconds only


def saved_step(path):
    """The step of the checkpoint at path (-1 if there is none yet); every load is weights_only."""
    return torch.load(path, weights_only=True)["step"] if path.exists() else -1


def ctrl_c_after_checkpoint(proc, ckpt_path, step):
    """Press Ctrl-C once the checkpoint of `step` (or a later one) is on disk."""
    wait_until(lambda: saved_step(ckpt_path) >= step, proc)
    proc.send_signal(signal.SIGINT)


def test_ctrl_c_during_training_keeps_the_best_model_and_says_how_to_resume(tmp_path, text_file, capsys, monkeypatch):
    # in this process; a real SIGINT to a real process is in the test of the printed resume command below
    ckpt_path = tmp_path / "out" / "bigram" / "ckpt.pt"
    ctrl_c_after(monkeypatch, 57)  # after the checkpoint of step 50
    code, out, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text_file, "--max_iters=100000",
                                                        "--eval_interval=50"), capsys, monkeypatch)
    assert code == 130, err
    assert f"; the best model so far is in {ckpt_path}; continue with: " in err.splitlines()[-1]
    words = shlex.split(err.splitlines()[-1].split("continue with: ")[1])
    assert words[0] == "python" and words[1].endswith("bigram.py")
    assert words[2:] == ["--resume", f"--out_dir={ckpt_path.parent}", f"--input_file={text_file}"]
    assert "Traceback" not in out + err
    assert saved_step(ckpt_path) == 50


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_loadable(tmp_path, text_file):
    bigram = import_script("bigram")
    out_dir = tmp_path / "out"
    ckpt_path, tmp = out_dir / "ckpt.pt", out_dir / "ckpt.pt.tmp"
    argv = tiny_args("bigram", tmp_path, text_file, "--max_iters=100000", "--eval_interval=1", f"--out_dir={out_dir}")
    with running("bigram", argv, tmp_path / "run") as proc:
        wait_until(ckpt_path.exists, proc)  # the first checkpoint is complete: ckpt.pt.tmp was renamed
        wait_until(tmp.exists, proc)  # a later checkpoint is being written
        proc.kill()  # somewhere in the write: torch.save, fsync or the rename (the test below tries each point)
        proc.wait(timeout=30)
    checkpoint = torch.load(ckpt_path, weights_only=True)
    model = bigram.build_model(checkpoint["config"], len(checkpoint["chars"]))
    model.load_state_dict(checkpoint["model"])  # complete: every tensor of the model is there


def test_at_every_point_of_a_write_the_file_on_disk_is_the_previous_one_whole(tmp_path, monkeypatch):
    """Every point of plumbing.write_file where a kill can land, in turn (the test above lands on one, by chance):
    before each chunk, at the fsync, at the rename. At each the file on disk is the previous one, whole; after the
    rename it is the new one, whole."""
    path, seen = tmp_path / "ckpt.pt", []
    path.write_bytes(b"previous checkpoint")
    fsync, replace = os.fsync, os.replace

    def killed_here(point):
        seen.append((point, path.read_bytes()))
    monkeypatch.setattr(os, "fsync", lambda fd: killed_here("fsync") or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda src, dst: killed_here("rename") or replace(src, dst))

    def chunks():
        for i in range(3):
            killed_here(f"chunk {i}")
            yield b"new part %d " % i
    plumbing.write_file(str(path), chunks())
    killed_here("done")
    assert [point for point, _ in seen] == ["chunk 0", "chunk 1", "chunk 2", "fsync", "rename", "done"]
    assert [data for _, data in seen] == [b"previous checkpoint"] * 5 + [b"new part 0 new part 1 new part 2 "]


@pytest.mark.parametrize("script, extra", [("bigram", []), ("gpt2", ["--dtype=float16"])])
def test_a_loss_that_blows_up_stops_the_run_with_one_error_line_and_keeps_the_last_good_model(
        script, extra, tmp_path, text_file, capsys, monkeypatch):
    argv = tiny_args(script, tmp_path, text_file, "--learning_rate=1e6", "--max_iters=200", "--eval_interval=100",
                     "--log_interval=1", *extra)
    code, out, err = run_in_process(script, argv, capsys, monkeypatch)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]  # the progress bar's lines, then the error
    assert sum("error:" in line for line in lines) == 1
    assert lines[-1].startswith("error: "), f"the error is not a line of its own, the last one:\n{err!r}"
    assert "loss" in lines[-1] and "--learning_rate" in lines[-1]
    assert "Traceback" not in out + err
    checkpoint = torch.load(tmp_path / "out" / script / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 0
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["model"].values())


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_resumed_run_prints_the_losses_of_an_uninterrupted_one(script, tmp_path, text_file, capsys, monkeypatch):
    k = 100  # steps between evaluations: the runs stop at k, then go on to 2k

    def args(name, *extra):
        return tiny_args(script, tmp_path / name, text_file, f"--max_iters={2 * k}", f"--eval_interval={k}", *extra)

    code, out, err = run_in_process(script, args("uninterrupted"), capsys, monkeypatch)
    assert code == 0, err
    uninterrupted = eval_lines(out)
    assert [line.split(":")[0] for line in uninterrupted] == ["step 0", f"step {k}", f"step {2 * k}"]

    if script == "gpt2":  # its learning rate depends on max_iters: stop the same run with Ctrl-C, as a user would
        ctrl_c_after(monkeypatch, k + 1)  # after the checkpoint of step k
        code, _, err = run_in_process(script, args("resumed"), capsys, monkeypatch)
        assert code == 130, err
    else:  # a constant learning rate: a shorter run, then more steps
        code, _, err = run_in_process(script, args("resumed", f"--max_iters={k}"), capsys, monkeypatch)
        assert code == 0, err
    code, out, err = run_in_process(script, args("resumed", "--resume"), capsys, monkeypatch)
    assert code == 0, err
    assert f"resuming from step {k}" in out
    assert eval_lines(out) == uninterrupted[1:]  # step k, evaluated again, then step 2k


def printed_command(err):
    """The command after `continue with: ` on the last line of stderr, as the words a shell would pass on."""
    return shlex.split(err.splitlines()[-1].split("continue with: ", 1)[1])


def test_the_printed_resume_command_resumes_the_run_in_its_own_folder(tmp_path, text_file, capsys, monkeypatch):
    out_dir = tmp_path / "my notes"  # not the default, and with a space: the command must carry it, quoted
    argv = tiny_args("bigram", tmp_path, text_file, "--max_iters=100000", "--eval_interval=50", f"--out_dir={out_dir}")
    with running("bigram", argv, tmp_path / "run") as proc:
        ctrl_c_after_checkpoint(proc, out_dir / "ckpt.pt", 50)
        code, _, err = finish(proc, tmp_path / "run")
    assert code == 130, err
    words = printed_command(err)
    assert words[0] == "python" and words[1].endswith("bigram.py") and "--resume" in words
    assert f"--out_dir={out_dir}" in words
    saved = saved_step(out_dir / "ckpt.pt")
    ctrl_c_after(monkeypatch, saved)  # the command as pasted, in the same folder: in this process, to save a start
    code, out, err = run_in_process("bigram", words[2:], capsys, monkeypatch, cwd=tmp_path / "run")
    assert code == 130, err
    assert f"resuming from step {saved} " in out
    assert printed_command(err)[2:] == words[2:]  # the same command again
    assert saved_step(out_dir / "ckpt.pt") >= saved and not (tmp_path / "run" / "out").exists()


@pytest.mark.parametrize("environment, launcher", [
    ({}, ["python"]),
    ({"RANK": "0", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, ["torchrun", "--standalone", "--nproc_per_node=4"]),
    ({"RANK": "1", "WORLD_SIZE": "2"}, ["torchrun", "--standalone", "--nproc_per_node=2"]),
])
def test_printed_commands_carry_the_folders_and_the_launcher(environment, launcher, monkeypatch):
    gpt2 = import_script("gpt2")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["gpt2.py"])
    cfg = {**gpt2.HYPERPARAMETERS, "out_dir": "runs/a b", "input_file": "my text.txt"}
    assert shlex.split(plumbing.command(gpt2.SCRIPT, cfg, "--resume")) == [
        *launcher, "gpt2.py", "--resume", "--out_dir=runs/a b", "--input_file=my text.txt"]
    assert shlex.split(plumbing.command(gpt2.SCRIPT, gpt2.HYPERPARAMETERS)) == [*launcher, "gpt2.py"]  # defaults


def test_ctrl_c_before_training_starts_is_one_line_not_a_traceback(tmp_path, text_file, capsys, monkeypatch):
    def pressed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "manual_seed", pressed)  # Ctrl-C while the model is being made
    code, out, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text_file), capsys, monkeypatch)
    assert code == 130
    assert err.splitlines()[-1] == "interrupted" and "Traceback" not in out + err


def test_ctrl_c_before_the_first_model_is_saved_offers_no_resume(tmp_path, text_file, capsys, monkeypatch):
    out_dir = tmp_path / "out" / "bigram"
    out_dir.mkdir(parents=True)
    torch.save({"script": "bigram"}, out_dir / "ckpt.pt")  # another run's checkpoint, which --resume would continue
    monkeypatch.setattr(torch, "save", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt()))
    code, out, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text_file), capsys, monkeypatch)
    assert code == 130
    assert err.splitlines()[-1] == ("interrupted at step 0, before this run saved a model; nothing to resume: run the "
                                    "same command again")
