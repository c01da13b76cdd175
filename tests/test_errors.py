"""User mistakes end with one line `error: ...`, exit code 2 and no traceback, and leave no half-written file."""

import builtins
import errno
import io
import os
import random
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import SCRIPTS, TEXT, run_in_process, tiny_args

import plumbing

MODELS = ("v2", "gpt2")  # the scripts with n_embd and n_head
BIGRAM = ("bigram",)  # a mistake the plumbing handles runs through one script, the fastest
V2 = ("v2",)  # the fastest with n_embd, n_head and --attention_png
GPT2 = ("gpt2",)  # gpt2.py's own settings and its token file
TEXT_READERS = ("bigram", "gpt2")  # plumbing.read_text, and gpt2.py's own reader of texts of any size (load_tokens)
PROGRESS_BAR = re.compile(r"\d+/\d+ \[")  # tqdm's lines on stderr, e.g. ` 50%|█████     | 10/20 [00:01<00:01`


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
    trained: Callable  # script -> the TrainedRun of a tiny trained model (conftest)

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
        return (self.trained(script or self.script).out_dir / "ckpt.pt").read_bytes()


class HalfWriter:
    """A file whose write stores half of the bytes, then fails with OSError(code), as a full disk does."""

    def __init__(self, f, code):
        self.f, self.code = f, code

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        raise OSError(self.code, os.strerror(self.code))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def failing_writes(m, suffix, code=errno.ENOSPC, after=0):
    """Writes to files whose name ends in suffix fail halfway with OSError(code), from the (after+1)-th on."""
    real_open, opened = builtins.open, []

    def patched_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode and str(file).endswith(suffix):
            opened.append(file)
            if len(opened) > after:
                return HalfWriter(f, code)
        return f
    m.monkeypatch.setattr(builtins, "open", patched_open)


def unwritable_folder(m, folder):
    """os.access says folder cannot be written, as it says to a user without the permission (root may write)."""
    real_access = os.access
    m.monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(folder) and mode == os.W_OK
                          else real_access(p, mode, **kw))


def with_settings(m, **changes):
    """A trained checkpoint whose saved settings differ: the run that saved it had used these."""
    checkpoint = torch.load(m.trained(m.script).out_dir / "ckpt.pt", weights_only=True)
    checkpoint["config"] = {**checkpoint["config"], **changes}
    return saved(checkpoint)


def renamed_weights(m):
    """A trained checkpoint whose tensors have other names, as an older version of the script would save."""
    checkpoint = torch.load(m.trained(m.script).out_dir / "ckpt.pt", weights_only=True)
    checkpoint["model"] = {f"old.{name}": tensor for name, tensor in checkpoint["model"].items()}
    return saved(checkpoint)


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
def scripts_without_input_txt(m):
    """The default input.txt, where the scripts' folder (plumbing.py's) has none: the download is tried."""
    (m.tmp_path / "scripts").mkdir()
    m.monkeypatch.setattr(plumbing, "__file__", str(m.tmp_path / "scripts" / "plumbing.py"))
    return m.args(text="input.txt")


CASES = [  # (id, scripts, argv of the mistake, fragments the message must contain; {script} is the script's name)
    # input file
    ("input-missing", BIGRAM, lambda m: m.args(text="nope.txt"), ["nope.txt does not exist", "--input_file"]),
    ("input-missing-default-offline", BIGRAM, scripts_without_input_txt,
     ["download failed", "input.txt or pass --input_file"]),
    ("input-empty", TEXT_READERS, lambda m: m.args(text=m.file("empty.txt", b"")), ["is empty"]),
    ("input-directory", BIGRAM, lambda m: m.args(text=m.tmp_path), ["is a directory"]),
    ("input-unreadable", BIGRAM, unreadable_input, ["cannot be read", "permission"]),
    ("input-not-utf8", TEXT_READERS, lambda m: m.args(text=m.file("bad.txt", b"\xff\xfe\x00bad" * 100)), ["not utf-8"]),
    ("input-shorter-than-a-window", BIGRAM, lambda m: m.args(text=m.file("short.txt", b"ab" * 4)),
     ["val split", "shorter than block_size + 1"]),
    ("input-one-character", BIGRAM, lambda m: m.args(text=m.file("a.txt", b"a" * 5000)),
     ["single distinct character"]),
    # hyperparameters
    ("unknown-option", BIGRAM, lambda m: m.args("--bogus=1"), ["unknown option '--bogus=1'", "--batch_size"]),
    ("wrong-type", BIGRAM, lambda m: m.args("--batch_size=abc"), ["--batch_size needs a value of type int", "'abc'"]),
    ("batch-size-zero", BIGRAM, lambda m: m.args("--batch_size=0"), ["--batch_size=0 is out of range", "[1, inf)"]),
    ("block-size-negative", BIGRAM, lambda m: m.args("--block_size=-1"), ["--block_size=-1 is out of range"]),
    ("n-embd-zero", V2, lambda m: m.args("--n_embd=0"), ["--n_embd=0 is out of range", "[1, inf)"]),
    ("n-embd-not-divisible-by-n-head", V2, lambda m: m.args("--n_embd=30", "--n_head=4"),
     ["--n_head=4 is out of range", "n_embd % n_head == 0", "(n_embd=30)"]),
    ("block-size-beyond-the-val-split", BIGRAM, lambda m: m.args("--block_size=100000"),
     ["val split", "--block_size"]),
    ("eval-interval-zero", BIGRAM, lambda m: m.args("--eval_interval=0"),
     ["--eval_interval=0 is out of range", "[1, inf)"]),
    ("min-lr-above-learning-rate", GPT2, lambda m: m.args("--min_lr=0.5"),
     ["--min_lr=0.5 is out of range", "[0, learning_rate]", "(learning_rate=0.001)"]),
    *[(f"learning-rate-{lr}", BIGRAM, lambda m, lr=lr: m.args(f"--learning_rate={lr}"),
       [f"--learning_rate={float(lr)} is out of range", "learning_rate must be in (0, inf)"]) for lr in LEARNING_RATES],
    # sampling
    ("sample-before-training", BIGRAM, lambda m: m.args("--sample"),
     ["no saved model", "train one first with: python ", "{script}.py --out_dir="]),
    ("prompt-outside-the-vocabulary", SCRIPTS,
     lambda m: m.checkpoint(m.trained_checkpoint(), "--sample", "--prompt=ROMEO@"),
     ["not in the model's vocabulary", "'@EMOR'"]),
    ("temperature-negative", BIGRAM,
     lambda m: m.checkpoint(m.trained_checkpoint(), "--sample", "--temperature=-1"),
     ["--temperature=-1.0 is out of range", "temperature must be in [0, inf)"]),
    # checkpoints
    ("checkpoint-truncated", BIGRAM, truncated_checkpoint, ["not a readable checkpoint", "train again"]),
    ("checkpoint-random-bytes", BIGRAM, lambda m: m.checkpoint(random.Random(0).randbytes(4096), "--sample"),
     ["not a readable checkpoint", "train again"]),
    ("checkpoint-of-something-else", BIGRAM, lambda m: m.checkpoint(saved({"hello": 1}), "--sample"),
     ["is not a checkpoint of {script}.py"]),
    ("checkpoint-from-bigram", MODELS, lambda m: m.checkpoint(m.trained_checkpoint("bigram"), "--sample"),
     ["is not a checkpoint of {script}.py", "it is from bigram.py"]),
    ("resume-on-another-vocabulary", BIGRAM,
     lambda m: m.checkpoint(m.trained_checkpoint(), "--resume",
                            f"--input_file={m.file('upper.txt', TEXT.upper().encode())}"),
     ["another vocabulary", "same --input_file"]),
    ("checkpoint-that-runs-code", BIGRAM,
     lambda m: m.checkpoint(saved({"script": m.script, "model": CodeOnLoad()}), "--sample"),
     ["refused", "would run code"]),
    # device
    ("device-cuda-missing", BIGRAM, lambda m: m.args("--device=cuda"), ["--device=cuda", "no cuda", "--device=cpu"]),
    ("device-mps-missing", BIGRAM, lambda m: m.args("--device=mps"), ["--device=mps", "no mps", "--device=cpu"]),
    ("device-unknown", BIGRAM, lambda m: m.args("--device=tpu"), ["--device must be one of cuda, mps, cpu", "'tpu'"]),
    # settings that disagree with the saved run
    *[(f"{mode}-with-another-{name}", V2,
       lambda m, mode=mode, name=name, value=value: m.checkpoint(m.trained_checkpoint(), f"--{mode}",
                                                                 f"--{name}={value}"),
       [f"--{name}={value} does not match the saved model", f"{name}={saved_value}", f"leave --{name} out"])
      for mode in ("resume", "sample")
      for name, value, saved_value in (("n_embd", 32, 16), ("n_head", 4, 2), ("n_layer", 3, 1), ("block_size", 8, 16))],
    ("resume-before-the-saved-step", BIGRAM,
     lambda m: m.checkpoint(with_settings(m, max_iters=20), "--resume", "--max_iters=5", "--eval_interval=5"),
     ["--max_iters=5 is before the saved step 20", "larger --max_iters"]),
    ("checkpoint-of-another-version", BIGRAM, lambda m: m.checkpoint(renamed_weights(m), "--sample"),
     ["does not fit {script}.py's model", "train again"]),
    # paths that are the wrong kind of thing
    ("out-dir-is-a-file", BIGRAM, lambda m: m.args(f"--out_dir={m.file('notes.txt', b'notes')}"),
     ["--out_dir=", "notes.txt is a file, not a folder", "another --out_dir"]),
    ("out-dir-is-a-file-on-resume", BIGRAM, lambda m: m.args("--resume", f"--out_dir={m.file('notes.txt', b'x')}"),
     ["notes.txt is a file, not a folder"]),
    ("out-dir-is-a-file-on-sample", BIGRAM, lambda m: m.args("--sample", f"--out_dir={m.file('notes.txt', b'x')}"),
     ["notes.txt is a file, not a folder"]),
    ("out-dir-inside-a-file", BIGRAM, lambda m: m.args(f"--out_dir={m.file('notes.txt', b'x')}/run"),
     ["cannot write", "notes.txt/run", "a part of the path is a file", "--out_dir"]),
    ("out-dir-not-writable", BIGRAM,
     lambda m: unwritable_folder(m, m.tmp_path / "out" / m.script) or m.args(),
     ["cannot write in", "permission denied", "--out_dir"]),
    ("input-inside-a-file", BIGRAM, lambda m: m.args(text=f"{m.file('notes.txt', b'x')}/input.txt"),
     ["input file", "notes.txt is not a folder", "--input_file"]),
    ("input-is-a-pipe", BIGRAM, lambda m: os.mkfifo(m.tmp_path / "pipe") or m.args(text=m.tmp_path / "pipe"),
     ["is not a regular file", "--input_file"]),
    # the attention picture
    ("attention-png-without-sample", V2, lambda m: m.args("--attention_png=att.png"),
     ["--attention_png draws the attention of a saved model", "add --sample"]),
    ("attention-png-before-training", V2, lambda m: m.args("--sample", "--attention_png=att.png"),
     ["no saved model", "train one first with: python ", "{script}.py --out_dir="]),
    ("attention-png-without-matplotlib", V2,
     lambda m: m.monkeypatch.setitem(sys.modules, "matplotlib", None)
     or m.checkpoint(m.trained_checkpoint(), "--sample", f"--attention_png={m.tmp_path / 'att.png'}"),
     ["--attention_png needs matplotlib", "pip install matplotlib"]),
    ("attention-png-folder-not-writable", V2,
     lambda m: unwritable_folder(m, m.tmp_path / "pictures") or (m.tmp_path / "pictures").mkdir()
     or m.checkpoint(m.trained_checkpoint(), "--sample", f"--attention_png={m.tmp_path / 'pictures' / 'att.png'}"),
     ["cannot write in", "permission denied", "--attention_png"]),
    ("attention-png-inside-a-file", V2,
     lambda m: m.checkpoint(m.trained_checkpoint(), "--sample", f"--attention_png={m.file('notes.txt', b'x')}/a.png"),
     ["notes.txt is a file", "another --attention_png"]),
    ("attention-png-is-a-folder", V2,
     lambda m: m.checkpoint(m.trained_checkpoint(), "--sample", f"--attention_png={m.tmp_path}"),
     ["names a folder, not a file", "another --attention_png"]),
    ("disk-full-writing-the-attention-png", V2,
     lambda m: failing_writes(m, "att.png.tmp")
     or m.checkpoint(m.trained_checkpoint(), "--sample", f"--attention_png={m.tmp_path / 'att.png'}"),
     ["cannot write", "att.png", "no space left on the disk"]),
    # writes that fail halfway: a full disk, no permission
    ("disk-full-saving-a-checkpoint", BIGRAM, lambda m: failing_writes(m, "ckpt.pt.tmp", after=1) or m.args(),
     ["cannot write", "ckpt.pt", "no space left on the disk"]),
    ("disk-full-writing-the-loss-log", BIGRAM, lambda m: failing_writes(m, "losses.csv.tmp", after=1) or m.args(),
     ["cannot write", "losses.csv", "no space left on the disk"]),
    ("disk-full-writing-the-plot", BIGRAM, lambda m: failing_writes(m, "loss.png.tmp") or m.args(),
     ["cannot write", "loss.png", "no space left on the disk"]),
    ("disk-full-writing-the-token-file", GPT2, lambda m: failing_writes(m, "tokens.bin.tmp") or m.args(),
     ["cannot write", "text.txt.", ".tokens.bin", "no space left on the disk"]),
    ("disk-quota-writing-the-token-description", GPT2,
     lambda m: failing_writes(m, "tokens.json.tmp", code=errno.EDQUOT) or m.args(), ["tokens.json", "quota"]),
    ("permission-denied-saving-a-checkpoint", BIGRAM,
     lambda m: failing_writes(m, "ckpt.pt.tmp", code=errno.EACCES) or m.args(), ["ckpt.pt", "permission denied"]),
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
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr is not one error line:\n{err}"
    assert err.rstrip().endswith(lines[0])  # after any progress bar, on a line of its own
    for fragment in fragments:
        assert fragment.format(script=script).lower() in lines[0].lower()
    assert "Traceback" not in out + err
    assert not list(tmp_path.rglob("*.tmp")), "a failed write left a temp file behind"



@pytest.mark.usefixtures("offline_machine_without_gpu")
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_loadable(tmp_path, text_file, trained, capsys,
                                                                          monkeypatch):
    script = "bigram"
    m = Mistake(script, tmp_path, text_file, monkeypatch, trained)
    failing_writes(m, "ckpt.pt.tmp", after=1)  # the checkpoint of step 0 is written, the next one fails halfway
    code, _, err = run_in_process(script, m.args(), capsys, monkeypatch)
    assert code == 2, err
    monkeypatch.undo()
    checkpoint = torch.load(tmp_path / "out" / script / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 0
    code, out, err = run_in_process(script, m.args("--sample"), capsys, monkeypatch)  # it loads and samples
    assert code == 0, err
    assert sorted(path.name for path in (tmp_path / "out" / script).iterdir()) == ["ckpt.pt", "losses.csv"]


def test_settings_that_may_change_on_resume_are_taken_from_the_command_line(tmp_path, text_file, capsys, monkeypatch):
    script = "v2"

    def run(*extra):
        code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file, *extra), capsys, monkeypatch)
        assert code == 0, err
        return out

    run("--max_iters=10", "--eval_interval=10")
    changed = ("--max_iters=30", "--eval_interval=5", "--learning_rate=3e-4", "--dropout=0.1", "--batch_size=3",
               "--seed=7", "--n_embd=16")  # n_embd as saved: repeating a model setting is fine
    out = run("--resume", *changed)
    assert [int(line.split()[1].rstrip(":")) for line in out.splitlines() if line.startswith("step ")] == [
        10, 15, 20, 25, 30]
    saved = torch.load(tmp_path / "out" / script / "ckpt.pt", weights_only=True)["config"]
    assert (saved["learning_rate"], saved["dropout"], saved["batch_size"], saved["seed"]) == (3e-4, 0.1, 3, 7)
