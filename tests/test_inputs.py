"""What a user types: every setting's valid values, seeds, temperatures, prompts, output paths, the console's
encoding, combinations that mean nothing, and memory running out."""

import io
import os
import re
import runpy
import sys

import pytest
import torch
from conftest import ROOT, SCRIPTS, TEXT, eval_lines, import_script, run_in_process, run_subprocess, tiny_args

MODELS = ("v2", "gpt2")
PROGRESS_BAR = re.compile(r"\d+/\d+ \[")  # tqdm's lines on stderr


def error_line(code, out, err):
    """The one `error: ...` line of a refused run (exit code 2, no traceback, nothing else on stderr)."""
    assert code == 2, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def refused(script, tmp_path, text_file, capsys, monkeypatch, *extra):
    """Run the tiny config with extra, expect a refusal before any work: (the error line, what it created)."""
    before = set(tmp_path.rglob("*"))
    line = error_line(*run_in_process(script, tiny_args(script, tmp_path, text_file, *extra), capsys, monkeypatch))
    return line, set(tmp_path.rglob("*")) - before


def config(script, *argv):
    module = import_script(script)
    return module, {**module.HYPERPARAMETERS, **module.parse_command_line(list(argv), module.HYPERPARAMETERS)}


# --- every setting's valid values ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_setting_has_its_valid_values_in_the_table_and_the_defaults_are_valid(script):
    module = import_script(script)
    assert set(module.HYPERPARAMETERS) <= set(module.VALID)
    cfg = dict(module.HYPERPARAMETERS)
    for name in module.HYPERPARAMETERS:
        rule = module.VALID[name]
        if rule is not None:
            assert module.is_valid(cfg[name], rule, cfg), name
    module.check_config(cfg)


OUT_OF_RANGE = [  # (scripts, the setting as typed, what the one line must name)
    (SCRIPTS, "--seed=18446744073709551616", "--seed=18446744073709551616 is out of range: seed must be in [-2**63"),
    (SCRIPTS, "--seed=-9223372036854775809", "seed must be in [-2**63, 2**63 - 1]"),
    (SCRIPTS, "--learning_rate=inf", "learning_rate must be in (0, inf)"),
    (SCRIPTS, "--temperature=nan", "--temperature=nan is out of range: temperature must be in [0, inf)"),
    (SCRIPTS, "--temperature=inf", "temperature must be in [0, inf)"),
    (SCRIPTS, "--top_k=-1", "--top_k=-1 is out of range: top_k must be in [0, inf)"),
    (SCRIPTS, "--max_new_tokens=-5", "max_new_tokens must be in [0, inf)"),
    (SCRIPTS, "--eval_batch_size=0", "eval_batch_size must be in [1, inf)"),
    (SCRIPTS, "--eval_train_windows=0", "eval_train_windows must be in [1, inf)"),
    (SCRIPTS, "--log_interval=0", "log_interval must be in [1, inf)"),
    (SCRIPTS, "--max_iters=0", "max_iters must be in [1, inf)"),
    (MODELS, "--dropout=1", "--dropout=1.0 is out of range: dropout must be in [0, 1)"),
    (MODELS, "--dropout=-0.1", "dropout must be in [0, 1)"),
    (MODELS, "--n_layer=0", "n_layer must be in [1, inf)"),
    (("gpt2",), "--grad_clip=-1", "--grad_clip=-1.0 is out of range: grad_clip must be in [0, inf)"),
    (("gpt2",), "--grad_clip=inf", "grad_clip must be in [0, inf)"),
    (("gpt2",), "--min_lr=-0.01", "--min_lr=-0.01 is out of range: min_lr must be in [0, learning_rate]"),
    (("gpt2",), "--min_lr=0.01", "min_lr must be in [0, learning_rate] (learning_rate=0.001)"),
    (("gpt2",), "--min_lr=nan", "min_lr must be in [0, learning_rate]"),
    (("gpt2",), "--weight_decay=-1", "--weight_decay=-1.0 is out of range: weight_decay must be in [0, inf)"),
    (("gpt2",), "--weight_decay=nan", "weight_decay must be in [0, inf)"),
    (("gpt2",), "--time_budget=-5", "--time_budget=-5 is out of range: time_budget must be in [0, inf)"),
    (("gpt2",), "--beta1=1.5", "--beta1=1.5 is out of range: beta1 must be in [0, 1)"),
    (("gpt2",), "--beta1=1", "beta1 must be in [0, 1)"),
    (("gpt2",), "--beta2=nan", "--beta2=nan is out of range: beta2 must be in [0, 1)"),
    (("gpt2",), "--beta2=-0.5", "beta2 must be in [0, 1)"),
    (("gpt2",), "--warmup_iters=-1", "warmup_iters must be in [0, inf)"),
    (("gpt2",), "--grad_accum_steps=0", "grad_accum_steps must be in [1, inf)"),
    (("gpt2",), "--max_val_windows=0", "max_val_windows must be in [1, inf)"),
    (("gpt2",), "--dtype=half", "--dtype must be one of auto, bfloat16, float16, float32, got 'half'"),
    (SCRIPTS, "--device=gpu", "--device must be one of cuda, mps, cpu, \"\", got 'gpu'"),
]


@pytest.mark.parametrize(("script", "arg", "expected"), [
    pytest.param(script, arg, expected, id=f"{script}{arg}") for scripts, arg, expected in OUT_OF_RANGE
    for script in scripts])
def test_a_value_out_of_range_is_one_line_naming_the_setting_and_its_range_before_any_work(
        script, arg, expected, tmp_path, text_file, capsys, monkeypatch):
    line, created = refused(script, tmp_path, text_file, capsys, monkeypatch, arg)
    assert expected in line
    assert not created


@pytest.mark.parametrize(("script", "args"), [
    ("gpt2", ["--min_lr=0", "--grad_clip=0", "--weight_decay=0", "--beta1=0", "--beta2=0", "--warmup_iters=0",
              "--time_budget=0", "--dropout=0"]),
    ("gpt2", ["--min_lr=1e-3", "--learning_rate=1e-3", "--beta1=0.999999", "--dropout=0.999"]),
    ("v2", ["--temperature=0", "--top_k=0", "--max_new_tokens=0", "--eval_interval=20"]),
    ("bigram", ["--seed=9223372036854775807", "--device=", "--temperature=1e-300"]),
    ("bigram", ["--seed=-9223372036854775808", "--device=cpu"]),
])
def test_values_at_the_ends_of_their_ranges_are_accepted(script, args):
    module, cfg = config(script, *TINY_VALUES[script], *args)
    module.check_config(cfg)


TINY_VALUES = {"bigram": [], "v2": ["--max_iters=20"], "gpt2": []}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_each_settings_valid_values(script, capsys):
    module = import_script(script)
    with pytest.raises(SystemExit):
        module.parse_command_line(["--help"], module.HYPERPARAMETERS)
    out = capsys.readouterr().out
    assert re.search(r"--seed=1337 .*; valid: \[-2\*\*63, 2\*\*63 - 1\]$", out, re.M)
    assert re.search(r"--learning_rate=\S+ .*AdamW step size; valid: \(0, inf\)$", out, re.M)
    assert re.search(r'--device="" .*; valid: cuda, mps, cpu, ""$', out, re.M)


# --- seeds ---
@pytest.mark.parametrize("script", ("bigram", "v2"))
@pytest.mark.parametrize("seed", [20261129, -12345678, 2**63 - 1, -2**63])
def test_every_64_bit_seed_trains_and_samples(script, seed, tmp_path, text_file, capsys, monkeypatch):
    args = tiny_args(script, tmp_path, text_file, f"--seed={seed}", "--max_iters=4", "--eval_interval=2")
    code, out, err = run_in_process(script, args, capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run_in_process(script, [*args, "--sample", "--prompt=First"], capsys, monkeypatch)
    assert code == 0, err
    assert any(line.startswith("First") for line in out.splitlines())


# --- temperatures too small to compute with ---
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_tiny_positive_temperature_samples_the_likeliest_token(script, temperature, dtype):
    module = import_script(script)
    logits = torch.randn(8, 65, generator=torch.Generator().manual_seed(0)).to(dtype)  # (B, V)
    for top_k in (0, 5):
        idx = module.sample_next(logits, temperature, top_k, torch.Generator().manual_seed(1))
        assert torch.equal(idx, logits.argmax(dim=-1, keepdim=True))


@pytest.mark.parametrize("script", SCRIPTS)
def test_sampling_at_temperature_1_draws_from_the_softmax(script):
    module = import_script(script)
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)  # (B, V)
    idx = module.sample_next(logits, 1.0, 0, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(idx[:, 0], minlength=3) / len(idx)
    assert torch.allclose(frequencies, torch.softmax(logits[0], dim=-1), atol=0.02)


# --- the prompt ---
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(("typed", "text"), [
    (r"ROMEO:\nIs the day so young?", "ROMEO:\nIs the day so young?"),
    (r"a\\nb", "a\\nb"),  # an escaped backslash, then an n
    (r"a\\\nb", "a\\\nb"),  # an escaped backslash, then a newline
    (r"C:\\new", "C:\\new"),
    (r"\t and \x stay", "\\t and \\x stay"),
    ("no escapes", "no escapes"),
])
def test_the_prompt_reads_backslash_n_as_a_newline_and_two_backslashes_as_one(script, typed, text):
    module = import_script(script)
    assert module.read_prompt(typed) == text
    stoi = {ch: i for i, ch in enumerate(sorted(set(text) | {"\n"}))}
    assert module.prompt_ids(typed, stoi) == module.encode(text, stoi)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_prompt_of_two_lines_is_continued_from_its_second_line(script, tmp_path, text_file, capsys, monkeypatch):
    args = tiny_args(script, tmp_path, text_file)
    assert run_in_process(script, args, capsys, monkeypatch)[0] == 0
    code, out, err = run_in_process(script, [*args, "--sample", r"--prompt=All:\nSpeak"], capsys, monkeypatch)
    assert code == 0, err
    assert "All:\nSpeak" in out and r"\n" not in out


# --- the console's encoding, and --sample_file ---
JAPANESE = "こんにちは、世界。"
TEXT_WITH_JAPANESE = TEXT + (JAPANESE + "\n") * 20


def on_a_cp1252_console(script, argv, monkeypatch):
    """Run `python script.py argv` in this process, its stdout and stderr a console that only has cp1252 (as Windows
    gives a redirected or older console): (exit code, what it printed to stdout)."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")  # strict: a character it lacks would raise
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="cp1252"))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    try:
        runpy.run_path(str(ROOT / f"{script}.py"), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    stdout.flush()
    return code, stdout.buffer.getvalue().decode("cp1252")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_as_a_process_on_a_cp1252_console_prints_the_documented_lines_and_the_sample_with_question_marks(
        script, tmp_path, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text(TEXT_WITH_JAPANESE, encoding="utf-8")
    sample_file = tmp_path / "sample.txt"
    monkeypatch.setenv("PYTHONIOENCODING", "cp1252")  # as a Windows console, or a pipe there, has it
    result = run_subprocess(script, tiny_args(script, tmp_path, text, f"--prompt={JAPANESE}",
                                              f"--sample_file={sample_file}"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("using device: cpu\n")
    lines = eval_lines(result.stdout)
    assert len(lines) == 3 and all(re.fullmatch(r"step \d+: train loss \d\.\d{4}, val loss \d\.\d{4}", line)
                                   for line in lines)
    sample = sample_file.read_bytes().decode("utf-8")
    assert sample.startswith(JAPANESE) and len(sample) == len(JAPANESE) + 20
    assert result.stdout.endswith(sample.encode("cp1252", errors="replace").decode("cp1252") + "\n")
    assert "?????????" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_sample_on_a_cp1252_console_prints_question_marks_and_the_sample_file_has_the_text(script, tmp_path,
                                                                                           monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text(TEXT_WITH_JAPANESE, encoding="utf-8")
    args = tiny_args(script, tmp_path, text)
    assert on_a_cp1252_console(script, args, monkeypatch)[0] == 0  # training ends with a sample too
    sample_file = tmp_path / "samples" / "sample.txt"
    code, stdout = on_a_cp1252_console(script, [*args, "--sample", f"--prompt={JAPANESE}",
                                                f"--sample_file={sample_file}"], monkeypatch)
    assert code == 0
    sample = sample_file.read_bytes().decode("utf-8")
    assert sample.startswith(JAPANESE) and len(sample) == len(JAPANESE) + 20
    assert stdout.endswith(sample.encode("cp1252", errors="replace").decode("cp1252") + "\n")
    assert "?????????" in stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_sample_file_holds_the_printed_sample(script, tmp_path, text_file, capsys, monkeypatch):
    sample_file = tmp_path / "a" / "b" / "sample.txt"  # its folders are made when it is written
    code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file, f"--sample_file={sample_file}"),
                                    capsys, monkeypatch)
    assert code == 0, err
    assert out.endswith(sample_file.read_text(encoding="utf-8") + "\n")
    assert not list(tmp_path.rglob("*.tmp"))


# --- output paths, checked before any work ---
def path_in_the_way(kind, tmp_path):
    """A path of the given kind: (the path, what the error line must say)."""
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "pictures").mkdir(exist_ok=True)
    return {
        "ends-in-a-separator": (f"{tmp_path}/new/att.png/", "it names a folder, not a file"),
        "an-existing-folder": (str(tmp_path / "pictures"), "it names a folder, not a file"),
        "inside-a-file": (str(tmp_path / "notes.txt" / "deeper" / "att.png"), "notes.txt is a file, not a folder"),
    }[kind]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("kind", ["ends-in-a-separator", "an-existing-folder", "inside-a-file"])
def test_a_sample_file_that_cannot_be_written_is_refused_before_training_creating_nothing(
        script, kind, tmp_path, text_file, capsys, monkeypatch):
    path, says = path_in_the_way(kind, tmp_path)
    line, created = refused(script, tmp_path, text_file, capsys, monkeypatch, f"--sample_file={path}")
    assert says in line and "--sample_file" in line
    assert not created  # no out_dir, no folder of the sample file


@pytest.mark.parametrize("script", MODELS)
@pytest.mark.parametrize("kind", ["ends-in-a-separator", "an-existing-folder", "inside-a-file"])
def test_an_attention_png_that_cannot_be_written_is_refused_before_sampling_creating_nothing(
        script, kind, tmp_path, text_file, capsys, monkeypatch):
    assert run_in_process(script, tiny_args(script, tmp_path, text_file), capsys, monkeypatch)[0] == 0
    path, says = path_in_the_way(kind, tmp_path)
    line, created = refused(script, tmp_path, text_file, capsys, monkeypatch, "--sample", f"--attention_png={path}")
    assert says in line and "--attention_png" in line
    assert not created


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_out_dir_below_a_file_is_refused_creating_nothing(script, tmp_path, text_file, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("notes")
    line, created = refused(script, tmp_path, text_file, capsys, monkeypatch,
                            f"--out_dir={tmp_path / 'notes.txt' / 'a' / 'b'}")
    assert "notes.txt is a file, not a folder" in line and "--out_dir" in line
    assert not created


@pytest.mark.real_plots
def test_an_attention_png_in_a_new_folder_is_drawn_there(tmp_path, text_file, capsys, monkeypatch):
    args = tiny_args("v2", tmp_path, text_file)
    assert run_in_process("v2", args, capsys, monkeypatch)[0] == 0
    png = tmp_path / "new" / "folder" / "att.png"
    code, out, err = run_in_process("v2", [*args, "--sample", "--prompt=All:", f"--attention_png={png}"], capsys,
                                    monkeypatch)
    assert code == 0, err
    assert png.read_bytes().startswith(b"\x89PNG")


# --- combinations that mean nothing ---
@pytest.mark.parametrize(("script", "args", "expected"), [
    *[(script, ["--sample", "--resume"], "--sample and --resume do not go together") for script in SCRIPTS],
    ("gpt2", ["--sample", "--time_budget=60"], "--time_budget plans a training run and --sample does not train"),
    ("gpt2", ["--sample", "--time_budget=0"], "leave --time_budget out"),
    ("gpt2", ["--resume", "--init_from=out/gpt2"], "--init_from starts a new run from a saved model"),
])
def test_settings_that_mean_nothing_together_are_one_line(script, args, expected, tmp_path, text_file, capsys,
                                                          monkeypatch):
    line, created = refused(script, tmp_path, text_file, capsys, monkeypatch, *args)
    assert expected in line
    assert not created


def test_sampling_your_own_text_with_its_input_file_given_works(tmp_path, text_file, capsys, monkeypatch):
    out_dir = f"--out_dir={tmp_path / 'notes'}"  # as the README's command: the input file is given, not read
    args = [*tiny_args("v2", tmp_path, text_file), out_dir]
    assert run_in_process("v2", args, capsys, monkeypatch)[0] == 0
    code, out, err = run_in_process("v2", [*args, "--sample", "--prompt=Speak "], capsys, monkeypatch)
    assert code == 0, err
    assert any(line.startswith("Speak ") for line in out.splitlines())


# --- memory running out anywhere ---
CPU_ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 4398046511104 bytes. Error code 12 (Cannot allocate memory)")
WINDOWS_ALLOCATOR = "DefaultCPUAllocator: not enough memory: you tried to allocate 4398046511104 bytes."


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(("where", "error", "device"), [
    ("model", RuntimeError(CPU_ALLOCATOR), "the CPU"),
    ("model", RuntimeError(WINDOWS_ALLOCATOR), "the CPU"),
    ("model", MemoryError(), "the CPU"),
    ("model", torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 TiB"), "CUDA"),
    ("optimizer", RuntimeError(CPU_ALLOCATOR), "the CPU"),
    ("step", RuntimeError(CPU_ALLOCATOR), "the CPU"),
])
def test_memory_running_out_anywhere_is_one_line_with_the_advice(script, where, error, device, tmp_path, text_file,
                                                                 capsys, monkeypatch):
    def run_out(*args, **kwargs):
        raise error
    target = {"model": (torch.nn.Embedding, "reset_parameters"), "optimizer": (torch.optim.AdamW, "__init__"),
              "step": (torch.nn.functional, "cross_entropy")}[where]
    monkeypatch.setattr(*target, run_out)
    line = error_line(*run_in_process(script, tiny_args(script, tmp_path, text_file), capsys, monkeypatch))
    assert line.startswith(f"error: {device} ran out of memory") and "try a smaller --batch_size" in line


@pytest.mark.parametrize("script", ["v2", "gpt2"])
def test_a_model_larger_than_the_machine_is_refused_in_one_line_before_any_work(script, tmp_path, text_file, capsys,
                                                                                 monkeypatch):
    args = tiny_args(script, tmp_path, text_file, "--n_embd=131072", "--n_head=2")  # 64 GiB per (C, C) matrix
    code, out, err = run_in_process(script, args, capsys, monkeypatch)
    assert code == 2
    assert err.startswith("error: a model of ") and "GiB to train, and cpu has " in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any work: not even the run's folder


def test_the_memory_check_counts_weights_gradients_and_adamw_state(tmp_path, text_file, capsys, monkeypatch):
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 512}  # a machine of 2 MiB
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    args = tiny_args("v2", tmp_path, text_file)
    assert run_in_process("v2", args, capsys, monkeypatch)[0] == 0  # 0.01M parameters: 16 bytes each fit
    code, _, err = run_in_process("v2", [*args, "--n_embd=64", "--n_head=4", "--n_layer=4"], capsys, monkeypatch)
    assert code == 2 and "GiB to train" in err  # the video's small model: 0.21M parameters, 3.4 MB to train
