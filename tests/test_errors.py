"""User mistakes end with one line `error: ...`, exit code 2 and no traceback, before any training starts."""

import io
import os
import random
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import SCRIPTS, TEXT, TINY, run_in_process, tiny_args

MODELS = ("v2", "gpt2")  # the scripts with n_embd and n_head


@pytest.fixture(scope="module")
def trained_dirs():
    return {}  # script -> out_dir of one tiny training run, made on first use


@pytest.fixture
def trained(trained_dirs, tmp_path_factory, capsys, monkeypatch):
    """trained(script) -> the out_dir of a tiny trained model of that script, trained once per module."""
    def out_dir(script):
        if script not in trained_dirs:
            base = tmp_path_factory.mktemp(f"trained_{script}")
            text = base / "text.txt"
            text.write_text(TEXT, encoding="utf-8")
            code, _, err = run_in_process(script, tiny_args(script, base, text), capsys, monkeypatch)
            assert code == 0, f"the tiny training run of {script}.py failed:\n{err}"
            trained_dirs[script] = base / "out" / script
        return trained_dirs[script]
    return out_dir


@pytest.fixture
def offline_machine_without_gpu(monkeypatch):
    """No network and no CUDA or MPS, whatever machine the tests run on."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


class CodeOnLoad:
    """Unpickling an instance imports this module and builds an object: code that weights_only loading refuses."""


@dataclass
class Mistake:
    """What a row needs to set up its mistake: the script, a scratch folder, and a trained model on demand."""
    script: str
    tmp_path: Path
    text_file: Path
    monkeypatch: pytest.MonkeyPatch
    trained: Callable[[str], Path]  # script -> out_dir of a tiny trained model

    def args(self, *extra, text=None):
        return tiny_args(self.script, self.tmp_path, text or self.text_file, *extra)

    def file(self, name, content):
        path = self.tmp_path / name
        path.write_bytes(content)
        return path

    def checkpoint(self, content, *extra):
        """Put content where the run looks for its checkpoint; the args of a run that loads it."""
        path = self.tmp_path / "out" / self.script / "ckpt.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
        return self.args(*extra)

    def trained_checkpoint(self, script=None):
        return (self.trained(script or self.script) / "ckpt.pt").read_bytes()


def unreadable_input(m):
    path = m.file("secret.txt", TEXT.encode())
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads any file: make the permission check see what a user would
        real_access = os.access
        m.monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(path) and mode == os.R_OK
                              else real_access(p, mode, **kw))
    return m.args(text=path)


def truncated_checkpoint(m):
    content = m.trained_checkpoint()
    return m.checkpoint(content[:len(content) // 2], "--sample")


def saved(obj):
    """The bytes torch.save writes for obj."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


LEARNING_RATES = ("0", "-1", "nan", "inf")
CASES = [  # (id, scripts, argv of the mistake, fragments the message must contain; {script} is the script's name)
    # input file
    ("input-missing", SCRIPTS, lambda m: m.args(text="nope.txt"), ["nope.txt does not exist", "--input_file"]),
    ("input-missing-default-offline", SCRIPTS, lambda m: m.args(text="input.txt"),
     ["download failed", "place any utf-8 text file at input.txt or pass --input_file"]),
    ("input-empty", SCRIPTS, lambda m: m.args(text=m.file("empty.txt", b"")), ["is empty"]),
    ("input-directory", SCRIPTS, lambda m: m.args(text=m.tmp_path), ["is a directory"]),
    ("input-unreadable", SCRIPTS, unreadable_input, ["cannot be read", "permission"]),
    ("input-not-utf8", SCRIPTS, lambda m: m.args(text=m.file("bad.txt", b"\xff\xfe\x00bad" * 100)), ["not utf-8"]),
    ("input-shorter-than-a-window", SCRIPTS, lambda m: m.args(text=m.file("short.txt", b"ab" * 4)),
     ["val split", "shorter than block_size + 1"]),
    ("input-one-character", SCRIPTS, lambda m: m.args(text=m.file("a.txt", b"a" * 5000)),
     ["single distinct character"]),
    # hyperparameters
    ("unknown-option", SCRIPTS, lambda m: m.args("--bogus=1"), ["unknown option '--bogus=1'", "--batch_size"]),
    ("wrong-type", SCRIPTS, lambda m: m.args("--batch_size=abc"), ["--batch_size needs a value of type int", "'abc'"]),
    ("batch-size-zero", SCRIPTS, lambda m: m.args("--batch_size=0"), ["--batch_size must be a positive integer"]),
    ("block-size-negative", SCRIPTS, lambda m: m.args("--block_size=-1"), ["--block_size must be a positive integer"]),
    ("n-embd-zero", MODELS, lambda m: m.args("--n_embd=0"), ["--n_embd must be a positive integer"]),
    ("n-embd-not-divisible-by-n-head", MODELS, lambda m: m.args("--n_embd=30", "--n_head=4"),
     ["--n_embd=30 must be divisible by --n_head=4"]),
    ("block-size-beyond-the-val-split", SCRIPTS, lambda m: m.args("--block_size=100000"),
     ["val split", "--block_size"]),
    ("eval-interval-beyond-max-iters", SCRIPTS, lambda m: m.args("--eval_interval=50"),
     ["--eval_interval=50 is larger than --max_iters=20"]),
    *[(f"learning-rate-{lr}", SCRIPTS, lambda m, lr=lr: m.args(f"--learning_rate={lr}"),
       ["--learning_rate must be a finite positive number"]) for lr in LEARNING_RATES],
    # sampling
    ("sample-before-training", SCRIPTS, lambda m: m.args("--sample"), ["no saved model", "python {script}.py"]),
    ("prompt-outside-the-vocabulary", SCRIPTS,
     lambda m: m.checkpoint(m.trained_checkpoint(), "--sample", "--prompt=ROMEO@"),
     ["not in the model's vocabulary", "'@EMOR'"]),
    ("temperature-negative", SCRIPTS, lambda m: m.args("--sample", "--temperature=-1"),
     ["--temperature must be 0 (greedy) or positive"]),
    # checkpoints
    ("checkpoint-truncated", SCRIPTS, truncated_checkpoint, ["not a readable checkpoint", "train again"]),
    ("checkpoint-random-bytes", SCRIPTS, lambda m: m.checkpoint(random.Random(0).randbytes(4096), "--sample"),
     ["not a readable checkpoint", "train again"]),
    ("checkpoint-of-something-else", SCRIPTS, lambda m: m.checkpoint(saved({"hello": 1}), "--sample"),
     ["is not a checkpoint of {script}.py"]),
    ("checkpoint-from-bigram", MODELS, lambda m: m.checkpoint(m.trained_checkpoint("bigram"), "--sample"),
     ["is not a checkpoint of {script}.py", "it is from bigram.py"]),
    ("resume-on-another-vocabulary", SCRIPTS,
     lambda m: m.checkpoint(m.trained_checkpoint(), "--resume",
                            f"--input_file={m.file('upper.txt', TEXT.upper().encode())}"),
     ["another vocabulary", "same --input_file"]),
    ("checkpoint-that-runs-code", SCRIPTS,
     lambda m: m.checkpoint(saved({"script": m.script, "model": CodeOnLoad()}), "--sample"),
     ["refused", "would run code"]),
    # device
    ("device-cuda-missing", SCRIPTS, lambda m: m.args("--device=cuda"), ["--device=cuda", "no cuda", "--device=cpu"]),
    ("device-mps-missing", SCRIPTS, lambda m: m.args("--device=mps"), ["--device=mps", "no mps", "--device=cpu"]),
    ("device-unknown", SCRIPTS, lambda m: m.args("--device=tpu"), ["--device must be cuda, mps or cpu", "'tpu'"]),
]


@pytest.mark.parametrize(("script", "mistake", "fragments"), [
    pytest.param(script, mistake, fragments, id=f"{script}-{case}")
    for case, scripts, mistake, fragments in CASES for script in scripts
])
@pytest.mark.usefixtures("offline_machine_without_gpu")
def test_a_user_mistake_ends_with_one_error_line_and_exit_code_2(script, mistake, fragments, tmp_path, text_file,
                                                                 trained, capsys, monkeypatch):
    argv = mistake(Mistake(script, tmp_path, text_file, monkeypatch, trained))
    cwd = tmp_path / "cwd"  # an empty folder: no input.txt, no out/
    cwd.mkdir()
    code, out, err = run_in_process(script, argv, capsys, monkeypatch, cwd=cwd)
    assert code == 2, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr is not one error line:\n{err}"
    for fragment in fragments:
        assert fragment.format(script=script).lower() in lines[0].lower()
    assert "Traceback" not in out + err


def sample(script, out_dir, capsys, monkeypatch, *extra):
    """The text a --sample run prints (after `using device: cpu`)."""
    code, out, err = run_in_process(script, [*TINY[script], f"--out_dir={out_dir}", "--sample", *extra], capsys,
                                    monkeypatch)
    assert code == 0, err
    assert out.startswith("using device: cpu\n")
    return out.removeprefix("using device: cpu\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_empty_prompt_starts_the_sample_from_a_newline(script, trained, capsys, monkeypatch):
    text = sample(script, trained(script), capsys, monkeypatch, "--prompt=", "--max_new_tokens=7")
    assert text.startswith("\n")
    assert len(text) == 1 + 7 + 1  # the newline it starts from, 7 new characters, print's newline


@pytest.mark.parametrize("script", SCRIPTS)
def test_top_k_above_the_vocabulary_size_samples_as_without_top_k(script, trained, capsys, monkeypatch):
    assert (sample(script, trained(script), capsys, monkeypatch, "--top_k=1000")
            == sample(script, trained(script), capsys, monkeypatch, "--top_k=0"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_temperature_zero_samples_the_likeliest_characters_whatever_the_seed(script, trained, capsys, monkeypatch):
    assert (sample(script, trained(script), capsys, monkeypatch, "--temperature=0", "--seed=1")
            == sample(script, trained(script), capsys, monkeypatch, "--temperature=0", "--seed=2"))
