"""The files a run writes and reads: a file another program holds open, a damaged loss log, checkpoints that lack
what a mode needs or belong to something else, and error lines that fit the option the user gave."""

import errno
import os
import re
import shutil
import time

import pytest
import torch
from conftest import SCRIPTS, TEXT, import_script, run_in_process, tiny_args

PROGRESS_BAR = re.compile(r"\d+/\d+ \[")  # tqdm's lines on stderr


def message_lines(err):
    """The lines of stderr that are not the progress bar's."""
    return [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS_BAR.search(line)]


@pytest.fixture(scope="module")
def trained_runs():
    return {}


@pytest.fixture
def trained(trained_runs, tmp_path_factory, tmp_path, capsys, monkeypatch):
    """trained(script) -> a copy, in tmp_path/out/script, of a tiny run trained once per module (20 steps)."""
    def copy(script):
        if script not in trained_runs:
            base = tmp_path_factory.mktemp(f"trained_{script}")
            (base / "text.txt").write_text(TEXT, encoding="utf-8")
            code, _, err = run_in_process(script, tiny_args(script, base, base / "text.txt"), capsys, monkeypatch)
            assert code == 0, err
            trained_runs[script] = base / "out" / script
        out_dir = tmp_path / "out" / script
        shutil.copytree(trained_runs[script], out_dir)
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


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_file_held_for_a_moment_is_written_after_a_retry(script, tmp_path, text_file, capsys, monkeypatch):
    waits = held_open(monkeypatch, "losses.csv", times=3)
    code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file), capsys, monkeypatch)
    assert code == 0, err
    assert len(waits) == 3 and "warning" not in err
    rows = (tmp_path / "out" / script / "losses.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "10", "20"]


def test_write_file_waits_about_a_second_before_it_gives_up(tmp_path, monkeypatch):
    v2 = import_script("v2")
    path = tmp_path / "losses.csv"
    path.write_text("old")
    waits = held_open(monkeypatch, "losses.csv")
    with pytest.raises(v2.FileHeld, match="another program"):
        v2.write_file(str(path), [b"new"])
    assert 0.5 <= sum(waits) <= 2 and path.read_text() == "old" and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("name", ["losses.csv", "loss.png"])
def test_a_log_or_plot_held_open_is_one_warning_and_training_goes_on(script, name, tmp_path, text_file, capsys,
                                                                     monkeypatch):
    out_dir = tmp_path / "out" / script
    out_dir.mkdir(parents=True)
    (out_dir / name).write_bytes(b"open in another program")
    held_open(monkeypatch, name)
    code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file), capsys, monkeypatch)
    assert code == 0, err
    lines = message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("warning: ") and str(out_dir / name) in lines[0], err
    assert "another program, e.g. a spreadsheet or an image viewer, has it open" in lines[0]
    assert torch.load(out_dir / "ckpt.pt", weights_only=True)["step"] == 20  # the run went on to its end
    assert "Traceback" not in out + err and not list(out_dir.glob("*.tmp"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_held_open_is_one_error_line_with_the_resume_command(script, tmp_path, text_file, capsys,
                                                                          monkeypatch):
    held_open(monkeypatch, "ckpt.pt")  # the first checkpoint is written; replacing it fails
    code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file), capsys, monkeypatch)
    assert code == 2, err
    lines = message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    ckpt = tmp_path / "out" / script / "ckpt.pt"
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


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_loss_log_is_read_as_far_as_it_can_be_and_the_run_goes_on(script, damage, trained, tmp_path,
                                                                            text_file, capsys, monkeypatch):
    out_dir = trained(script)
    log = out_dir / "losses.csv"
    rows = log.read_text().splitlines()  # the header, then steps 0, 10, 20
    log.write_text("\n".join(DAMAGES[damage](rows)) + "\n", errors="surrogateescape")
    argv = tiny_args(script, tmp_path, text_file, "--resume", "--max_iters=30")
    code, out, err = run_in_process(script, argv, capsys, monkeypatch)
    assert code == 0, err
    lines = message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("warning: ") and str(log) in lines[0], err
    assert "resuming from step 20" in out
    assert log.read_text().splitlines() == [*rows[:3], *log.read_text().splitlines()[3:]]  # good rows kept
    assert [row.split(",")[0] for row in log.read_text().splitlines()[1:]] == ["0", "10", "20", "30"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("name", ["losses.csv", "loss.png"])
def test_a_folder_in_place_of_the_log_or_plot_is_one_error_line_before_any_work(script, name, trained, tmp_path,
                                                                                text_file, capsys, monkeypatch):
    out_dir = trained(script)
    (out_dir / name).unlink()
    (out_dir / name).mkdir()
    before = (out_dir / "ckpt.pt").read_bytes()
    code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file, "--resume", "--max_iters=30"),
                                    capsys, monkeypatch)
    assert code == 2
    assert err.strip() == f"error: {out_dir / name} is a folder; move it out of the way, or choose another --out_dir"
    assert (out_dir / "ckpt.pt").read_bytes() == before and "step 20:" not in out  # nothing evaluated or saved


# --- checkpoints that lack what a mode needs ---
KEYS = [("sample", "config"), ("sample", "chars"), ("sample", "model"),
        ("resume", "optimizer"), ("resume", "step"), ("resume", "best_val_loss")]


def resaved(out_dir, change):
    path = out_dir / "ckpt.pt"
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("mode, key", KEYS)
@pytest.mark.parametrize("how", ["missing", "wrong-type"])
def test_a_checkpoint_without_a_key_its_mode_needs_is_one_line_naming_it(script, mode, key, how, trained, tmp_path,
                                                                         text_file, capsys, monkeypatch):
    def damage(checkpoint):
        if how == "missing":
            del checkpoint[key]
        else:
            checkpoint[key] = [1, 2]  # a list where a dict, a string or a number belongs
    path = resaved(trained(script), damage)
    code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file, f"--{mode}"), capsys, monkeypatch)
    assert code == 2
    found = "missing" if how == "missing" else "a list, not a"
    assert err.startswith(f"error: {path} is damaged: its {key!r} is {found}") and err.count("\n") == 1, err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("script", ["v2", "gpt2"])
def test_a_checkpoint_whose_config_lacks_a_model_setting_is_one_line_naming_it(script, trained, tmp_path, text_file,
                                                                               capsys, monkeypatch):
    path = resaved(trained(script), lambda checkpoint: checkpoint["config"].pop("n_embd"))
    code, _, err = run_in_process(script, tiny_args(script, tmp_path, text_file, "--sample"), capsys, monkeypatch)
    assert code == 2 and err == f"error: {path} is damaged: its config has no n_embd; delete it and train again\n"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_that_says_what_it_is_names_the_command_that_samples_it(script, trained, tmp_path, text_file,
                                                                             capsys, monkeypatch):
    def from_elsewhere(checkpoint):
        checkpoint.update(script="bench", what="the ladder's rung 3 (bench.py)",
                          sample_with="python bench.py --sample --out_dir=runs/ladder/3")
    path = resaved(trained(script), from_elsewhere)
    code, _, err = run_in_process(script, tiny_args(script, tmp_path, text_file, "--sample"), capsys, monkeypatch)
    assert code == 2
    assert err == (f"error: {path} is the ladder's rung 3 (bench.py), not a checkpoint of {script}.py; "
                   "sample it with: python bench.py --sample --out_dir=runs/ladder/3\n")


# --- error lines that name the option given and the fix that fits the mode ---
@pytest.mark.parametrize("mode, fix", [
    ("sample", "leave --n_embd out to sample the saved model"),
    ("resume", "leave --n_embd out to resume the saved model"),
])
def test_a_shape_mismatch_gives_the_fix_of_its_mode(mode, fix, trained, tmp_path, text_file, capsys, monkeypatch):
    trained("v2")
    code, _, err = run_in_process("v2", tiny_args("v2", tmp_path, text_file, f"--{mode}", "--n_embd=32"), capsys,
                                  monkeypatch)
    assert code == 2 and err.startswith("error: --n_embd=32 does not match the saved model") and fix in err, err


def test_init_from_a_file_names_init_from(tmp_path, text_file, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("notes")
    code, _, err = run_in_process("gpt2", tiny_args("gpt2", tmp_path, text_file, f"--init_from={afile}"), capsys,
                                  monkeypatch)
    assert code == 2
    assert err == f"error: --init_from={afile} is a file, not a folder; pass the folder of a training run\n"


def test_init_from_with_another_shape_keeps_the_pretrained_shape(trained, tmp_path, text_file, capsys, monkeypatch):
    pretrained = trained("gpt2")
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


def tiny_v2_run(text_file, out_dir, checkpoint=None, extra_state=None):
    v2 = import_script("v2")
    cfg = {**v2.HYPERPARAMETERS, "input_file": str(text_file), "out_dir": str(out_dir), "block_size": 8,
           "n_embd": 8, "n_head": 2, "n_layer": 1, "eval_train_windows": 4}
    chars, _, _, train_data, val_data = v2.load_data(cfg["input_file"], cfg["block_size"])
    model = v2.build_model(cfg, len(chars))
    optimizer = torch.optim.AdamW(model.parameters())
    return v2.Run(cfg, "cpu", model, optimizer, chars, train_data, val_data, checkpoint, extra_state=extra_state)


def test_extra_state_is_saved_in_the_checkpoint_and_restored(text_file, tmp_path, capsys):
    run = tiny_v2_run(text_file, tmp_path, extra_state={"counter": Counter(7)})
    run.evaluated(0, {"train": 2.0, "val": 2.0})
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["counter"] == {"count": 7}
    restored = Counter()
    tiny_v2_run(text_file, tmp_path, checkpoint, extra_state={"counter": restored})
    assert restored.count == 7
    del checkpoint["counter"]
    untouched = Counter(3)
    resumed = tiny_v2_run(text_file, tmp_path, checkpoint, extra_state={"counter": untouched})
    assert untouched.count == 3  # without its entry, the rest is restored:
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), checkpoint["model"].values(),
                                                  strict=True))
    capsys.readouterr()


@pytest.mark.parametrize("script", ["bigram", "v2"])
def test_the_lessons_without_a_gradient_scaler_never_mention_one(script):
    with open(import_script(script).__file__, encoding="utf-8") as f:
        assert "scaler" not in f.read()
