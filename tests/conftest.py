"""Shared fixtures: a small text, tiny configs, and ways to run a lesson script as a user would."""

import importlib
import os
import runpy
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib.figure
import pytest
import torch
import tqdm

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("bigram", "v2", "gpt2")
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)



def png_of_one_pixel():
    """A real PNG file, 1 x 1 pixel, grey."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # width, height, 8-bit greyscale
    pixels = zlib.compress(b"\x00\x80")  # one row: no filter, one grey pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def quick_figures(request, monkeypatch):
    """Figures are drawn for real only in the tests about pictures (marked real_plots); in every other test a figure
    is laid out and saved as a one-pixel PNG, since drawing the loss plot takes longer than a tiny run itself."""
    if request.node.get_closest_marker("real_plots"):
        return

    def save_one_pixel(figure, target, **kwargs):
        if hasattr(target, "write"):
            target.write(ONE_PIXEL_PNG)
        else:
            Path(target).write_bytes(ONE_PIXEL_PNG)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", save_one_pixel)
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda figure, *args, **kwargs: None)


ONE_PIXEL_PNG = png_of_one_pixel()

# a few KB of text with every kind of character the scripts must handle
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 30

# tiny configs: seconds per run on one CPU thread
TINY = {
    "bigram": ["--batch_size=4", "--block_size=8", "--max_iters=20", "--eval_interval=10", "--eval_train_windows=16",
               "--max_new_tokens=20", "--device=cpu"],
    "v2": ["--batch_size=4", "--block_size=16", "--max_iters=20", "--eval_interval=10", "--n_embd=16", "--n_head=2",
           "--n_layer=1", "--eval_train_windows=16", "--max_new_tokens=20", "--device=cpu"],
    "gpt2": ["--batch_size=4", "--block_size=16", "--max_iters=20", "--eval_interval=10", "--n_embd=16", "--n_head=2",
             "--n_layer=1", "--eval_train_windows=16", "--warmup_iters=5", "--max_new_tokens=20", "--device=cpu"],
}


def import_script(name):
    """Import a lesson script as a module (importing runs nothing)."""
    return importlib.import_module(name)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tiny_args(script, tmp_path, text_path, *extra):
    """The tiny config of a script, reading text_path and writing under tmp_path/out."""
    return [*TINY[script], f"--input_file={text_path}", f"--out_dir={tmp_path / 'out' / script}", *extra]


def run_in_process(script, argv, capsys, monkeypatch, cwd=None):
    """Run a script's __main__ in this process, as `python script.py argv` would: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    if cwd is not None:
        monkeypatch.chdir(cwd)
    code = 0
    try:
        runpy.run_path(str(ROOT / f"{script}.py"), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(script, argv, cwd=None, timeout=120, **kwargs):
    """Run `python script.py argv` in a real process (one thread, no network proxy needed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / f"{script}.py"), *argv], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def eval_lines(output):
    """The `step N: train loss X, val loss Y` lines of a run's output."""
    return [line for line in output.splitlines() if line.startswith("step ")]


def val_losses(output):
    """The val losses of a run's `step N: train loss X, val loss Y` lines."""
    return [float(line.rsplit(" ", 1)[1]) for line in eval_lines(output)]


def ctrl_c_after(monkeypatch, step):
    """Press Ctrl-C once, in this process, the moment training step `step` is done: the progress bar of every
    script's Run counts the steps (it starts at the resumed step), and the KeyboardInterrupt comes from there."""
    update, pressed = tqdm.tqdm.update, []

    def update_then_press(bar, n=1):
        shown = update(bar, n)
        if bar.n >= step + 1 and not pressed:
            pressed.append(step)
            raise KeyboardInterrupt
        return shown
    monkeypatch.setattr(tqdm.tqdm, "update", update_then_press)


OUT_OF_MEMORY = {  # what each device raises when it runs out of memory; MPS raises a plain RuntimeError
    "CUDA": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "MPS": lambda: RuntimeError("MPS backend out of memory (MPS allocated: 17.05 GB, other allocations: 1.53 GB, "
                                "max allowed: 18.13 GB). Tried to allocate 256.00 MB on private pool. Use "
                                "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations "
                                "(may cause system failure)."),
}


def out_of_memory_in_the_loss(monkeypatch, device):
    """Every loss computed from now on runs out of memory, as device (CUDA or MPS) does."""
    def out_of_memory(*args, **kwargs):
        raise OUT_OF_MEMORY[device]()
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", out_of_memory)


@dataclass
class TrainedRun:
    args: list  # the tiny run's command line; add --sample to sample its model
    out_dir: Path
    out: str  # what it printed


@pytest.fixture(scope="module")
def trained_runs():
    return {}  # script -> its TrainedRun, made on first use in each test module


@pytest.fixture
def trained(trained_runs, tmp_path_factory, capsys, monkeypatch):
    """trained(script) -> the TrainedRun of one tiny training run of that script (TINY, on TEXT), made once per
    test module."""
    def run(script):
        if script not in trained_runs:
            base = tmp_path_factory.mktemp(f"trained_{script}")
            text = base / "text.txt"
            text.write_text(TEXT, encoding="utf-8")
            args = tiny_args(script, base, text)
            code, out, err = run_in_process(script, args, capsys, monkeypatch)
            assert code == 0, f"the tiny training run of {script}.py failed:\n{err}"
            trained_runs[script] = TrainedRun(args, base / "out" / script, out)
        return trained_runs[script]
    return run
