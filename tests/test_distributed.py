"""gpt2.py under torchrun: 2 CPU processes with gloo train what 1 process trains, and fail without hanging."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TEXT, TINY, eval_lines, import_script, run_in_process, tiny_args

import plumbing

gpt2 = import_script("gpt2")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STEPS = ("--grad_accum_steps=2", "--max_iters=6", "--eval_interval=3")  # a global batch of 2 micro-batches


def our_lines(err):
    """A process's stderr without torch's own warnings (e.g. c10d's about a hostname, on a machine offline)."""
    return [line for line in err.splitlines() if not (line.startswith("[W") and "] [c10d]" in line)]


def torchrun(argv, cwd, *options, timeout=60):
    """`torchrun --standalone --nproc_per_node=2 gpt2.py argv`: (exit code, stdout, stderr); a hang fails the test."""
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *options, str(ROOT / "gpt2.py"), *argv], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: a hang must not outlive the test
        proc.communicate()
        raise
    return proc.returncode, out, err


def torchrun_per_rank(argv, cwd):
    """Run under torchrun with each worker's output in its own files: (exit code, {rank: (stdout, stderr)})."""
    code, _, _ = torchrun(argv, cwd, f"--log-dir={cwd / 'logs'}", "--redirects=3")
    ranks = {int(folder.name): ((folder / "stdout.log").read_text(), (folder / "stderr.log").read_text())
             for folder in (cwd / "logs").glob("*/attempt_0/*")}
    assert sorted(ranks) == [0, 1]
    return code, ranks


# a pretraining text whose characters include every one of TEXT's, and more
PRETRAIN_TEXT = TEXT + "Quixotic zephyrs jab; 42 vexed GNOMES!\n" * 20
# finetuning (--init_from, added by the fixture): every process must encode the text with the pretrained model's
# vocabulary; with dropout, each micro-batch's masks come from its own seed
FINETUNING = ("--dropout=0.2", "--learning_rate=3e-4")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """(exit code, stdout, stderr, out_dir, its options) of one 2-process run of the tiny config, made once for the
    tests below: it finetunes a model pretrained on PRETRAIN_TEXT, with dropout."""
    base = tmp_path_factory.mktemp("torchrun")
    text = base / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    (base / "pretrain.txt").write_text(PRETRAIN_TEXT, encoding="utf-8")
    gpt2.main(tiny_args("gpt2", base, base / "pretrain.txt", f"--out_dir={base / 'pre'}"))
    extra = [*FINETUNING, f"--init_from={base / 'pre'}"]
    return (*torchrun(tiny_args("gpt2", base, text, *STEPS, *extra), base), base / "out" / "gpt2", extra)


def test_two_processes_train_and_print_everything_once(two_process_run, capsys, monkeypatch):
    code, out, err, out_dir, _ = two_process_run
    assert code == 0, err
    assert [line.split(":")[0] for line in eval_lines(out)] == ["step 0", "step 3", "step 6"]
    assert out.count("using device") == 1 and "using device: cpu (2 processes)" in out
    assert "process group: 2 processes, backend gloo" in out
    assert "(2 process(es) x 1 micro-batch(es)" in out
    assert sorted(path.name for path in out_dir.iterdir() if ".pt" in path.name) == ["ckpt.pt"]
    code, out, err = run_in_process("gpt2", [*TINY["gpt2"], f"--out_dir={out_dir}", "--sample", "--max_new_tokens=7"],
                                    capsys, monkeypatch)
    assert code == 0, err
    assert len(out.removeprefix("using device: cpu\n")) == 1 + 7 + 1  # a newline, 7 characters, print's newline


def test_two_processes_train_the_parameters_one_process_trains(two_process_run, tmp_path, text_file, capsys,
                                                               monkeypatch):
    code, _, err, two_dir, extra = two_process_run
    assert code == 0, err
    code, out, err = run_in_process("gpt2", tiny_args("gpt2", tmp_path, text_file, *STEPS, *extra), capsys,
                                    monkeypatch)
    assert code == 0, err
    assert "(1 process(es) x 2 micro-batch(es)" in out
    one = torch.load(tmp_path / "out" / "gpt2" / "ckpt.pt", weights_only=True)
    two = torch.load(two_dir / "ckpt.pt", weights_only=True)
    assert one["step"] == two["step"] == 6  # both saved the model after the last step, not an earlier one
    assert one["config"]["dropout"] == two["config"]["dropout"] == 0.2
    expected = "".join(sorted(set(PRETRAIN_TEXT)))
    assert one["chars"] == two["chars"] == expected != "".join(sorted(set(TEXT)))  # the vocabulary reached every rank
    assert one["model"].keys() == two["model"].keys()
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("dev, nccl, backend", [
    ("cuda", True, "nccl"),  # Linux
    ("cuda", False, "gloo"),  # Windows: torch ships without NCCL
    ("cpu", True, "gloo"),
    ("cpu", False, "gloo"),
])
def test_the_backend_is_nccl_only_for_cuda_where_nccl_is_available(monkeypatch, capsys, dev, nccl, backend):
    monkeypatch.setattr(gpt2.dist, "is_nccl_available", lambda: nccl)
    assert gpt2.distributed_backend(dev) == backend
    joined = []
    monkeypatch.setattr(gpt2.dist, "init_process_group", lambda **kwargs: joined.append(kwargs))
    monkeypatch.setattr(gpt2.torch.cuda, "set_device", lambda device: None)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    rank, world_size, device = gpt2.setup_distributed(dev)
    assert (rank, world_size, device) == (0, 2, "cuda:0" if dev == "cuda" else dev)
    assert joined == [{"backend": backend}]
    assert capsys.readouterr().out == f"process group: 2 processes, backend {backend}\n"


def test_grad_accum_steps_not_divisible_by_the_processes_is_an_error(tmp_path, text_file, capsys, monkeypatch):
    # every rank refuses at once, before any work and any message to the others, so that none is left waiting; how
    # a real group of processes ends on one error line: the test below
    argv = tiny_args("gpt2", tmp_path, text_file, *STEPS, "--grad_accum_steps=3")
    for rank in (0, 1):
        monkeypatch.setattr(gpt2, "setup_distributed", lambda dev, rank=rank: (rank, 2, dev))  # 2 processes
        with pytest.raises(plumbing.UserError) as refused:
            gpt2.main(argv)
        assert str(refused.value) == ("--grad_accum_steps=3 must be divisible by the number of processes (2), so "
                                      "that the global batch stays the same")
        assert "using device" not in capsys.readouterr().out  # refused before training
        assert not (tmp_path / "out" / "gpt2" / "ckpt.pt").exists()


def test_a_rank_that_fails_brings_the_group_down_with_its_error_and_no_traceback(tmp_path, text_file):
    # rank 0 alone reads the text and sends its error to every rank, so that none is left waiting; torchrun stops
    # the others as soon as one has ended, so a rank may be stopped before it prints the line
    code, ranks = torchrun_per_rank(tiny_args("gpt2", tmp_path, "nope.txt", *STEPS), tmp_path)
    assert code != 0
    error = ["error: input file nope.txt does not exist; pass --input_file=PATH to a UTF-8 text file"]
    said = [our_lines(err) for _, err in ranks.values()]
    assert sorted(said) == [[], error]  # one error line, once: the first rank to reach it says it for both
    for rank, (_, err) in ranks.items():
        assert "Traceback" not in err, f"rank {rank} printed a traceback:\n{err}"


def test_under_torchrun_the_processes_that_stop_on_the_same_error_say_it_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plumbing.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-1")
    for _ in range(2):  # two processes of one run, the same mistake
        plumbing.say_error("--batch_size=0 is out of range: batch_size must be in [1, inf)")
    plumbing.say_error("CUDA ran out of memory; try a smaller --batch_size, or a smaller model")  # another error
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-2")  # the next torchrun command says it again
    plumbing.say_error("--batch_size=0 is out of range: batch_size must be in [1, inf)")
    assert capsys.readouterr().err.splitlines() == [
        "error: --batch_size=0 is out of range: batch_size must be in [1, inf)",
        "error: CUDA ran out of memory; try a smaller --batch_size, or a smaller model",
        "error: --batch_size=0 is out of range: batch_size must be in [1, inf)"]


def test_without_torchrun_every_error_is_said(capsys, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for _ in range(2):
        plumbing.say_error("input file nope.txt does not exist")
    assert capsys.readouterr().err.count("error: input file nope.txt does not exist\n") == 2
