"""The files a run writes and reads: a file another program holds open, a damaged loss log, checkpoints that lack
what a mode needs or belong to something else, and error lines that fit the option the user gave. plumbing.py does
this for every script: it is tested once, on plumbing directly where it can be, else through bigram.py (gpt2.py for
what only gpt2.py has)."""

import errno
import os
import re
import shutil
import time

import pytest
import torch
from conftest import TEXT, import_script, run_in_process, tiny_args

import plumbing

PROGRESS_BAR = re.compile(r"\d+/\d+ \[")  # tqdm's lines on stderr


def message_lines(err):
    """The lines of stderr that are not the progress bar's."""
    return [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS_BAR.search(line)]


@pytest.fixture
def trained_copy(trained, tmp_path):
    """trained_copy(script) -> a copy, in tmp_path/out/script, of the tiny run conftest trains once per module."""
    def copy(script):
        out_dir = tmp_path / "out" / script
        shutil.copytree(trained(script).out_dir, out_dir)
        return out_dir
    return copy


# --- a file another program holds open (Windows refuses to rename over it) ---
def held_open(monkeypatch, name, times=None):
    """os.replace onto an existing file called name fails as on Windows when another program has the file open:
    `times` times, or every time. Returns the list of waits write_file slept (without sleeping)."""
    replace, sleep, waits, failed = os.replace, time.sleep, [], []

    def held_replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name and os.path.exists(dst) and (times is None or len(failed) < times):
            failed.append(dst)
            error = PermissionError(errno.EACCES, "The process cannot access the file because it is being used by "
                                                  "another process", str(dst))
            error.winerror = 32
            raise error
        return replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", held_replace)
    monkeypatch.setattr(time, "sleep", lambda seconds: waits.append(seconds) if failed else sleep(seconds))
    return waits


def test_a_file_held_for_a_moment_is_written_after_a_retry(tmp_path, monkeypatch):
    path = tmp_path / "losses.csv"
    path.write_text("old")
    waits = held_open(monkeypatch, "losses.csv", times=3)
    plumbing.write_file(str(path), [b"new"])  # no FileHeld: no warning for the run to print
    assert waits == list(plumbing.REPLACE_WAITS[:3]) and path.read_text() == "new"
    assert not list(tmp_path.glob("*.tmp"))


def test_write_file_waits_about_a_second_before_it_gives_up(tmp_path, monkeypatch):
    path = tmp_path / "losses.csv"
    path.write_text("old")
    waits = held_open(monkeypatch, "losses.csv")
    with pytest.raises(plumbing.FileHeld, match="another program"):
        plumbing.write_file(str(path), [b"new"])
    assert 0.5 <= sum(waits) <= 2 and path.read_text() == "old" and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name", ["losses.csv", "loss.png"])
def test_a_log_or_plot_held_open_is_one_warning_and_training_goes_on(name, tmp_path, text_file, capsys, monkeypatch):
    out_dir = tmp_path / "out" / "bigram"
    out_dir.mkdir(parents=True)
    (out_dir / name).write_bytes(b"open in another program")
    held_open(monkeypatch, name)
    code, out, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text_file), capsys, monkeypatch)
    assert code == 0, err
    lines = message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("warning: ") and str(out_dir / name) in lines[0], err
    assert "another program, e.g. a spreadsheet or an image viewer, has it open" in lines[0]
    assert torch.load(out_dir / "ckpt.pt", weights_only=True)["step"] == 20  # the run went on to its end
    assert "Traceback" not in out + err and not list(out_dir.glob("*.tmp"))


def test_a_checkpoint_held_open_is_one_error_line_with_the_resume_command(tmp_path, text_file, capsys, monkeypatch):
    held_open(monkeypatch, "ckpt.pt")  # the first checkpoint is written; replacing it fails
    code, out, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text_file), capsys, monkeypatch)
    assert code == 2, err
    lines = message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    ckpt = tmp_path / "out" / "bigram" / "ckpt.pt"
    assert str(ckpt) in lines[0] and "another program" in lines[0] and "choose a folder" not in lines[0]
    assert lines[0].split("continue with: ")[1].split()[2:4] == ["--resume", f"--out_dir={ckpt.parent}"]
    assert torch.load(ckpt, weights_only=True)["step"] == 0  # the previous best model, whole
    assert not list(ckpt.parent.glob("*.tmp"))


# --- a damaged loss log at --resume ---
DAMAGES = {
    "garbage": lambda rows: [*rows[:2], "\x00\x01 garbage ###", *rows[2:]],
    "blank-line": lambda rows: [*rows[:2], "", *rows[2:]],
    "non-number": lambda rows: [*rows[:2], "5,abc,1.0,0.1,0.001", *rows[2:]],
    "no-header": lambda rows: rows[1:],
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_loss_log_is_read_as_far_as_it_can_be_and_the_run_goes_on(damage, tmp_path, capsys):
    path = tmp_path / "losses.csv"
    written = plumbing.LossLog(str(path))
    for step in (0, 10, 20):
        written.add(step, {"train": 3.0 - step / 100, "val": 3.1 - step / 100}, step / 10, 1e-3)
    rows = path.read_text().splitlines()  # the header, then steps 0, 10, 20
    path.write_text("\n".join(DAMAGES[damage](rows)) + "\n", errors="surrogateescape")
    log = plumbing.LossLog(str(path))
    log.read(20)  # resuming from step 20, which the run evaluates again
    dropped = 0 if damage == "no-header" else 1
    assert capsys.readouterr().err == (f"warning: {path} is damaged: {dropped} unreadable row(s) dropped, 2 kept; "
                                       "training goes on and rewrites it at the next evaluation\n")
    assert log.rows == rows[1:3]  # the good rows before step 20
    for step in (20, 30):
        log.add(step, {"train": 2.8, "val": 2.9}, step / 10, 1e-3)
    assert path.read_text().splitlines()[:3] == rows[:3]  # the header and the good rows kept, the damage gone
    assert [row.split(",")[0] for row in path.read_text().splitlines()[1:]] == ["0", "10", "20", "30"]


def test_a_resumed_runs_loss_log_goes_on_from_the_saved_runs_time(tmp_path):
    path = tmp_path / "losses.csv"
    first = plumbing.LossLog(str(path))
    for step, seconds in ((0, 0.0), (10, 40.0), (20, 80.0), (30, 120.0)):  # interrupted after step 30
        first.add(step, {"train": 3.0, "val": 3.1}, seconds, 1e-3)
    resumed = plumbing.LossLog(str(path))
    resumed.read(20)  # the best model was saved at step 20, which the resumed run evaluates again
    for step, seconds in ((20, 0.5), (30, 40.5)):  # the resumed run's own clock starts at 0
        resumed.add(step, {"train": 2.9, "val": 3.0}, seconds, 1e-3)
    elapsed = [float(row.split(",")[3]) for row in path.read_text().splitlines()[1:]]
    assert elapsed == [0.0, 40.0, 80.5, 120.5]  # bench.py --plot draws time going forwards


@pytest.mark.parametrize("name", ["ckpt.pt", "losses.csv", "loss.png"])
def test_a_folder_in_place_of_the_checkpoint_log_or_plot_is_refused_before_any_work(name, tmp_path):
    bigram = import_script("bigram")
    out_dir = tmp_path / "out"
    (out_dir / name).mkdir(parents=True)
    cfg = {**bigram.HYPERPARAMETERS, "out_dir": str(out_dir), "device": "cpu"}
    message = f"{out_dir / name} is a folder; move it out of the way, or choose another --out_dir"
    with pytest.raises(plumbing.UserError, match=f"^{re.escape(message)}$"):
        plumbing.check_config(cfg)  # main() calls it before any work
    assert os.listdir(out_dir) == [name]


# --- checkpoints that lack what a mode needs ---
KEYS = [("sample", "config"), ("sample", "chars"), ("sample", "model"),
        ("resume", "optimizer"), ("resume", "step"), ("resume", "best_val_loss")]


def resaved(out_dir, change):
    path = out_dir / "ckpt.pt"
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def refusal(script, argv):
    """The UserError plumbing.settings raises for the script's command line argv."""
    with pytest.raises(plumbing.UserError) as error:
        plumbing.settings(import_script(script).SCRIPT, argv)
    return str(error.value)


@pytest.mark.parametrize("mode, key", KEYS)
@pytest.mark.parametrize("how", ["missing", "wrong-type"])
def test_a_checkpoint_without_a_key_its_mode_needs_is_one_line_naming_it(mode, key, how, trained_copy):
    def damage(checkpoint):
        if how == "missing":
            del checkpoint[key]
        else:
            checkpoint[key] = [1, 2]  # a list where a dict, a string or a number belongs
    path = resaved(trained_copy("bigram"), damage)
    message = refusal("bigram", [f"--out_dir={path.parent}", f"--{mode}"])
    found = "missing" if how == "missing" else "a list, not a"
    assert message.startswith(f"{path} is damaged: its {key!r} is {found}") and "\n" not in message, message


def test_a_checkpoint_whose_config_lacks_a_model_setting_is_one_line_naming_it(trained_copy):
    path = resaved(trained_copy("v2"), lambda checkpoint: checkpoint["config"].pop("n_embd"))
    assert refusal("v2", [f"--out_dir={path.parent}", "--sample"]) == (
        f"{path} is damaged: its config has no n_embd; delete it and train again")


def test_a_checkpoint_that_says_what_it_is_names_the_command_that_samples_it(trained_copy):
    def from_elsewhere(checkpoint):
        checkpoint.update(script="bench", what="the ladder's rung 3 (bench.py)",
                          sample_with="python bench.py --sample --out_dir=runs/ladder/3")
    path = resaved(trained_copy("bigram"), from_elsewhere)
    assert refusal("bigram", [f"--out_dir={path.parent}", "--sample"]) == (
        f"{path} is the ladder's rung 3 (bench.py), not a checkpoint of bigram.py; "
        "sample it with: python bench.py --sample --out_dir=runs/ladder/3")


# --- error lines that name the option given and the fix that fits the mode ---
@pytest.mark.parametrize("mode, fix", [
    ("sample", "leave --n_embd out to sample the saved model"),
    ("resume", "leave --n_embd out to resume the saved model"),
])
def test_a_shape_mismatch_gives_the_fix_of_its_mode(mode, fix, trained_copy):
    out_dir = trained_copy("v2")
    message = refusal("v2", [f"--out_dir={out_dir}", f"--{mode}", "--n_embd=32"])
    assert message.startswith("--n_embd=32 does not match the saved model") and fix in message, message


def test_init_from_a_file_names_init_from(tmp_path, text_file, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("notes")
    code, _, err = run_in_process("gpt2", tiny_args("gpt2", tmp_path, text_file, f"--init_from={afile}"), capsys,
                                  monkeypatch)
    assert code == 2
    assert err == f"error: --init_from={afile} is a file, not a folder; pass the folder of a training run\n"


def test_init_from_with_another_shape_keeps_the_pretrained_shape(trained_copy, tmp_path, text_file, capsys,
                                                                 monkeypatch):
    pretrained = trained_copy("gpt2")
    argv = tiny_args("gpt2", tmp_path / "new", text_file, f"--init_from={pretrained}", "--n_embd=32")
    code, _, err = run_in_process("gpt2", argv, capsys, monkeypatch)
    assert code == 2 and "--n_embd=32 does not match the saved model" in err
    assert "a finetuned model has the shape of the model it starts from" in err and "--out_dir" not in err


# --- state a script adds to its checkpoint ---
class Counter:
    def __init__(self, count=0):
        self.count = count

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def tiny_run(out_dir, checkpoint=None, extra_state=None):
    """A plumbing.Run of bigram.py's model, as its train() makes one (without the progress bar)."""
    bigram = import_script("bigram")
    cfg = {**bigram.HYPERPARAMETERS, "out_dir": str(out_dir)}
    chars = sorted(set(TEXT))
    model = bigram.build_model(cfg, len(chars))
    optimizer = torch.optim.AdamW(model.parameters())
    run = plumbing.Run(bigram.SCRIPT, cfg, model, optimizer, chars, checkpoint, extra_state=extra_state)
    run.bar.close()
    return run


def test_extra_state_is_saved_in_the_checkpoint_and_restored(tmp_path, capsys):
    run = tiny_run(tmp_path, extra_state={"counter": Counter(7)})
    run.evaluated(0, {"train": 2.0, "val": 2.0})
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["counter"] == {"count": 7}
    restored = Counter()
    tiny_run(tmp_path, checkpoint, extra_state={"counter": restored})
    assert restored.count == 7
    del checkpoint["counter"]
    untouched = Counter(3)
    resumed = tiny_run(tmp_path, checkpoint, extra_state={"counter": untouched})
    assert untouched.count == 3  # without its entry, the rest is restored:
    assert resumed.start_step == 0 and resumed.best.val_loss == 2.0
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), checkpoint["model"].values(),
                                                  strict=True))
    capsys.readouterr()


@pytest.mark.parametrize("script", ["bigram", "v2"])
def test_the_lessons_without_a_gradient_scaler_never_mention_one(script):
    with open(import_script(script).__file__, encoding="utf-8") as f:
        assert "scaler" not in f.read()
