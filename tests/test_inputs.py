"""What a user types: every setting's valid values, seeds, temperatures, prompts, output paths, the console's
encoding, combinations that mean nothing, and memory running out."""

import io
import math
import re
import runpy
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import (
    OUT_OF_MEMORY,
    ROOT,
    SCRIPTS,
    TEXT,
    eval_lines,
    import_script,
    run_in_process,
    run_subprocess,
    tiny_args,
)

import plumbing

PROGRESS_BAR = re.compile(r"\d+/\d+ \[")  # tqdm's lines on stderr
EVERY_SETTING = import_script("gpt2")  # gpt2.py has every setting that bigram.py and v2.py have, and its own


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


def typed(*argv):
    """gpt2.py's defaults with argv as typed on its command line, read by plumbing (every setting of VALID)."""
    return {**EVERY_SETTING.HYPERPARAMETERS, **plumbing.parse_command_line(list(argv), EVERY_SETTING.SCRIPT)}


@pytest.fixture
def in_tmp_path(tmp_path, monkeypatch):
    """Run in an empty folder, so that the default out_dir (out/gpt2) is a new folder under it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- every setting's valid values ---
def test_every_number_setting_has_its_valid_values_in_the_table_and_the_defaults_are_valid(in_tmp_path):
    for script in SCRIPTS:
        settings = import_script(script).HYPERPARAMETERS
        unchecked = {name for name in settings if name not in plumbing.VALID}
        assert all(isinstance(settings[name], (bool, str)) for name in unchecked), (script, unchecked)  # paths, flags
        assert {"prompt", "sample_file", "input_file", "out_dir", "sample", "resume"} <= unchecked
        plumbing.check_config(dict(settings))
    assert set(plumbing.VALID) <= set(EVERY_SETTING.HYPERPARAMETERS)  # no rule for a setting no script has


OUT_OF_RANGE = [  # (the settings as typed, the one line)
    (["--seed=18446744073709551616"],
     "--seed=18446744073709551616 is out of range: seed must be in [-2**63, 2**63 - 1]"),
    (["--seed=-9223372036854775809"],
     "--seed=-9223372036854775809 is out of range: seed must be in [-2**63, 2**63 - 1]"),
    (["--learning_rate=inf"], "--learning_rate=inf is out of range: learning_rate must be in (0, inf)"),
    (["--learning_rate=0"], "--learning_rate=0.0 is out of range: learning_rate must be in (0, inf)"),
    (["--temperature=nan"], "--temperature=nan is out of range: temperature must be in [0, inf)"),
    (["--temperature=inf"], "--temperature=inf is out of range: temperature must be in [0, inf)"),
    (["--top_k=-1"], "--top_k=-1 is out of range: top_k must be in [0, inf)"),
    (["--max_new_tokens=-5"], "--max_new_tokens=-5 is out of range: max_new_tokens must be in [0, inf)"),
    (["--eval_batch_size=0"], "--eval_batch_size=0 is out of range: eval_batch_size must be in [1, inf)"),
    (["--eval_train_windows=0"], "--eval_train_windows=0 is out of range: eval_train_windows must be in [1, inf)"),
    (["--log_interval=0"], "--log_interval=0 is out of range: log_interval must be in [1, inf)"),
    (["--max_iters=0"], "--max_iters=0 is out of range: max_iters must be in [1, inf)"),
    (["--batch_size=0"], "--batch_size=0 is out of range: batch_size must be in [1, inf)"),
    (["--block_size=-1"], "--block_size=-1 is out of range: block_size must be in [1, inf)"),
    (["--eval_interval=0"], "--eval_interval=0 is out of range: eval_interval must be in [1, inf)"),
    (["--dropout=1"], "--dropout=1.0 is out of range: dropout must be in [0, 1)"),
    (["--dropout=-0.1"], "--dropout=-0.1 is out of range: dropout must be in [0, 1)"),
    (["--n_layer=0"], "--n_layer=0 is out of range: n_layer must be in [1, inf)"),
    (["--n_embd=0"], "--n_embd=0 is out of range: n_embd must be in [1, inf)"),
    (["--n_embd=16", "--n_head=3"],
     "--n_head=3 is out of range: n_head must be in [1, inf) and n_embd % n_head == 0 (n_embd=16)"),
    (["--n_head=0"], "--n_head=0 is out of range: n_head must be in [1, inf) and n_embd % n_head == 0 (n_embd=384)"),
    (["--grad_clip=-1"], "--grad_clip=-1.0 is out of range: grad_clip must be in [0, inf)"),
    (["--grad_clip=inf"], "--grad_clip=inf is out of range: grad_clip must be in [0, inf)"),
    (["--min_lr=-0.01"], "--min_lr=-0.01 is out of range: min_lr must be in [0, learning_rate] (learning_rate=0.001)"),
    (["--min_lr=0.01"], "--min_lr=0.01 is out of range: min_lr must be in [0, learning_rate] (learning_rate=0.001)"),
    (["--min_lr=nan"], "--min_lr=nan is out of range: min_lr must be in [0, learning_rate] (learning_rate=0.001)"),
    (["--weight_decay=-1"], "--weight_decay=-1.0 is out of range: weight_decay must be in [0, inf)"),
    (["--weight_decay=nan"], "--weight_decay=nan is out of range: weight_decay must be in [0, inf)"),
    (["--time_budget=-5"], "--time_budget=-5 is out of range: time_budget must be in [0, inf)"),
    (["--beta1=1.5"], "--beta1=1.5 is out of range: beta1 must be in [0, 1)"),
    (["--beta1=1"], "--beta1=1.0 is out of range: beta1 must be in [0, 1)"),
    (["--beta2=nan"], "--beta2=nan is out of range: beta2 must be in [0, 1)"),
    (["--beta2=-0.5"], "--beta2=-0.5 is out of range: beta2 must be in [0, 1)"),
    (["--warmup_iters=-1"], "--warmup_iters=-1 is out of range: warmup_iters must be in [0, inf)"),
    (["--grad_accum_steps=0"], "--grad_accum_steps=0 is out of range: grad_accum_steps must be in [1, inf)"),
    (["--max_val_windows=0"], "--max_val_windows=0 is out of range: max_val_windows must be in [1, inf)"),
    (["--dtype=half"], "--dtype must be one of auto, bfloat16, float16, float32, got 'half'"),
    (["--device=gpu"], "--device must be one of cuda, mps, cpu, \"\", got 'gpu'"),
]


@pytest.mark.parametrize(("argv", "expected"), [pytest.param(argv, expected, id=" ".join(argv))
                                                for argv, expected in OUT_OF_RANGE])
def test_a_value_out_of_range_is_one_line_naming_the_setting_and_its_range_before_any_work(argv, expected,
                                                                                          in_tmp_path):
    with pytest.raises(plumbing.UserError) as error:
        plumbing.check_config(typed(*argv))
    assert str(error.value) == expected
    assert not list(in_tmp_path.iterdir())  # checked before any work: nothing created


def test_nan_and_inf_are_out_of_range_for_every_float_setting(in_tmp_path):
    defaults = EVERY_SETTING.HYPERPARAMETERS
    floats = [name for name in plumbing.VALID if isinstance(defaults.get(name), float)]
    assert {"learning_rate", "dropout", "temperature", "min_lr", "beta1", "beta2", "grad_clip"} <= set(floats)
    for name in floats:
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(plumbing.UserError, match=re.escape(f"--{name}={value} is out of range: {name} must")):
                plumbing.check_config({**defaults, name: value})


def test_a_value_out_of_range_ends_a_run_in_one_error_line_and_exit_code_2_creating_nothing(tmp_path, text_file,
                                                                                            capsys, monkeypatch):
    line, created = refused("bigram", tmp_path, text_file, capsys, monkeypatch, "--temperature=nan")
    assert line == "error: --temperature=nan is out of range: temperature must be in [0, inf)"
    assert not created


@pytest.mark.parametrize("argv", [
    ["--min_lr=0", "--grad_clip=0", "--weight_decay=0", "--beta1=0", "--beta2=0", "--warmup_iters=0", "--time_budget=0",
     "--dropout=0"],
    ["--min_lr=1e-3", "--learning_rate=1e-3", "--beta1=0.999999", "--dropout=0.999"],
    ["--temperature=0", "--top_k=0", "--max_new_tokens=0", "--max_iters=20", "--eval_interval=20"],
    ["--batch_size=1", "--block_size=1", "--max_iters=1", "--eval_interval=1", "--n_layer=1", "--eval_batch_size=1",
     "--eval_train_windows=1", "--max_val_windows=1", "--grad_accum_steps=1", "--log_interval=1"],
    ["--n_embd=16", "--n_head=16"],
    ["--seed=9223372036854775807", "--device=", "--temperature=1e-300", "--dtype=float16"],
    ["--seed=-9223372036854775808", "--device=cpu", "--dtype=bfloat16"],
], ids=lambda argv: " ".join(argv))
def test_values_at_the_ends_of_their_ranges_are_accepted(argv, in_tmp_path):
    plumbing.check_config(typed(*argv))


def test_help_prints_each_settings_valid_values(capsys):
    with pytest.raises(SystemExit):
        plumbing.parse_command_line(["--help"], EVERY_SETTING.SCRIPT)
    out = capsys.readouterr().out
    assert re.search(r"--seed=1337 .*; valid: \[-2\*\*63, 2\*\*63 - 1\]$", out, re.M)
    assert re.search(r"--learning_rate=\S+ .*AdamW step size; valid: \(0, inf\)$", out, re.M)
    assert re.search(r'--device="" .*; valid: cuda, mps, cpu, ""$', out, re.M)
    for name, rule in plumbing.VALID.items():
        assert re.search(rf"^  --{name}=\S+ .*; valid: {re.escape(plumbing.describe_valid(rule))}$", out, re.M), name
    prompt = re.search(r'^  --prompt="" +text the sample continues.*$', out, re.M)
    assert prompt and "valid:" not in prompt[0]  # a str setting without a rule


# --- seeds ---
@pytest.mark.parametrize("seed", [20261129, -12345678, 2**63 - 1, -2**63])
def test_every_64_bit_seed_trains_and_samples(seed, tmp_path, text_file, capsys, monkeypatch):
    args = tiny_args("bigram", tmp_path, text_file, f"--seed={seed}", "--max_iters=4", "--eval_interval=2")
    code, out, err = run_in_process("bigram", args, capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run_in_process("bigram", [*args, "--sample", "--prompt=First"], capsys, monkeypatch)
    assert code == 0, err
    assert any(line.startswith("First") for line in out.splitlines())


# --- sample_next, each script's own: temperatures too small to compute with, and a model whose output is nan ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_tiny_positive_temperature_samples_the_likeliest_token(script):
    module = import_script(script)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        logits = torch.randn(8, 65, generator=torch.Generator().manual_seed(0)).to(dtype)  # (B, V)
        for temperature in (1e-40, 1e-300, 5e-324):
            for top_k in (0, 5):
                idx = module.sample_next(logits, temperature, top_k, torch.Generator().manual_seed(1))
                assert torch.equal(idx, logits.argmax(dim=-1, keepdim=True)), (dtype, temperature, top_k)


@pytest.mark.parametrize("script", SCRIPTS)
def test_sampling_at_temperature_1_draws_from_the_softmax(script):
    module = import_script(script)
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)  # (B, V)
    idx = module.sample_next(logits, 1.0, 0, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(idx[:, 0], minlength=3) / len(idx)
    assert torch.allclose(frequencies, torch.softmax(logits[0], dim=-1), atol=0.02)


@pytest.mark.parametrize("script", SCRIPTS)
def test_nan_logits_are_a_user_error_saying_the_weights_are_damaged(script):
    module = import_script(script)
    logits = torch.randn(4, 65, generator=torch.Generator().manual_seed(0))  # (B, V)
    logits[2, 7] = float("nan")  # one nan in one row is enough: no probability comes out of it
    for temperature, top_k in ((1.0, 0), (0.8, 5), (0, 0), (1e-300, 0)):  # greedy too: argmax would pick a token
        with pytest.raises(plumbing.UserError, match=r"^the model's output is nan \(not a number\): its weights are "
                                                     r"damaged; train it again$"):
            module.sample_next(logits, temperature, top_k, torch.Generator().manual_seed(1))


def test_sampling_a_model_whose_weights_are_nan_is_one_error_line(tmp_path, text_file, capsys, monkeypatch):
    args = tiny_args("bigram", tmp_path, text_file)
    assert run_in_process("bigram", args, capsys, monkeypatch)[0] == 0
    path = tmp_path / "out" / "bigram" / "ckpt.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"] = {name: torch.full_like(tensor, float("nan")) for name, tensor in checkpoint["model"].items()}
    torch.save(checkpoint, path)
    line = error_line(*run_in_process("bigram", [*args, "--sample"], capsys, monkeypatch))
    assert line == "error: the model's output is nan (not a number): its weights are damaged; train it again"


# --- the prompt ---
@pytest.mark.parametrize(("typed_prompt", "text"), [
    (r"ROMEO:\nIs the day so young?", "ROMEO:\nIs the day so young?"),
    (r"a\\nb", "a\\nb"),  # an escaped backslash, then an n
    (r"a\\\nb", "a\\\nb"),  # an escaped backslash, then a newline
    (r"C:\\new", "C:\\new"),
    (r"\t and \x stay", "\\t and \\x stay"),
    ("no escapes", "no escapes"),
])
def test_the_prompt_reads_backslash_n_as_a_newline_and_two_backslashes_as_one(typed_prompt, text):
    assert plumbing.prompt_text(typed_prompt, sorted(set(text) | {"\n"})) == text


def test_an_empty_prompt_starts_from_a_newline_or_the_vocabularys_first_character():
    assert plumbing.prompt_text("", "\n !ABab") == "\n"  # as the video does
    assert plumbing.prompt_text("", "abc") == "a"  # a text without a newline: token 0
    assert plumbing.prompt_text("", {"a": 0, "b": 1}) == "a"  # the scripts pass their stoi


def test_a_text_without_a_newline_trains_and_samples_from_its_first_character(tmp_path, capsys, monkeypatch):
    text = tmp_path / "one_line.txt"
    text.write_text(TEXT.replace("\n", " "), encoding="utf-8")
    code, out, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text), capsys, monkeypatch)
    assert code == 0, err
    assert out.rstrip("\n").splitlines()[-1].startswith(min(TEXT.replace("\n", " ")))  # token 0: " "


def test_a_prompt_of_two_lines_is_continued_from_its_second_line(tmp_path, text_file, capsys, monkeypatch):
    args = tiny_args("bigram", tmp_path, text_file)
    assert run_in_process("bigram", args, capsys, monkeypatch)[0] == 0
    code, out, err = run_in_process("bigram", [*args, "--sample", r"--prompt=All:\nSpeak"], capsys, monkeypatch)
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


def test_a_run_as_a_process_on_a_cp1252_console_prints_the_documented_lines_and_the_sample_with_question_marks(
        tmp_path, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text(TEXT_WITH_JAPANESE, encoding="utf-8")
    sample_file = tmp_path / "sample.txt"
    monkeypatch.setenv("PYTHONIOENCODING", "cp1252")  # as a Windows console, or a pipe there, has it
    result = run_subprocess("bigram", tiny_args("bigram", tmp_path, text, f"--prompt={JAPANESE}",
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


def test_sample_on_a_cp1252_console_prints_question_marks_and_the_sample_file_has_the_text(tmp_path, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text(TEXT_WITH_JAPANESE, encoding="utf-8")
    args = tiny_args("bigram", tmp_path, text)
    assert on_a_cp1252_console("bigram", args, monkeypatch)[0] == 0  # training ends with a sample too
    sample_file = tmp_path / "samples" / "sample.txt"
    code, stdout = on_a_cp1252_console("bigram", [*args, "--sample", f"--prompt={JAPANESE}",
                                                  f"--sample_file={sample_file}"], monkeypatch)
    assert code == 0
    sample = sample_file.read_bytes().decode("utf-8")
    assert sample.startswith(JAPANESE) and len(sample) == len(JAPANESE) + 20
    assert stdout.endswith(sample.encode("cp1252", errors="replace").decode("cp1252") + "\n")
    assert "?????????" in stdout


def test_sample_file_holds_the_printed_sample(tmp_path, text_file, capsys, monkeypatch):
    sample_file = tmp_path / "a" / "b" / "sample.txt"  # its folders are made when it is written
    code, out, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text_file, f"--sample_file={sample_file}"),
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


KINDS = ["ends-in-a-separator", "an-existing-folder", "inside-a-file"]


@pytest.mark.parametrize("option", ["sample_file", "attention_png"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_output_file_that_cannot_be_written_is_refused_naming_its_option(option, kind, in_tmp_path):
    path, says = path_in_the_way(kind, in_tmp_path)
    before = set(in_tmp_path.rglob("*"))
    with pytest.raises(plumbing.UserError) as error:
        plumbing.check_config({**EVERY_SETTING.HYPERPARAMETERS, "sample": True, option: path})
    assert says in str(error.value) and f"--{option}" in str(error.value)
    assert set(in_tmp_path.rglob("*")) == before


@pytest.mark.parametrize("kind", KINDS)
def test_a_sample_file_that_cannot_be_written_is_refused_before_training_creating_nothing(
        kind, tmp_path, text_file, capsys, monkeypatch):
    path, says = path_in_the_way(kind, tmp_path)
    line, created = refused("bigram", tmp_path, text_file, capsys, monkeypatch, f"--sample_file={path}")
    assert says in line and "--sample_file" in line
    assert not created  # no out_dir, no folder of the sample file


def test_an_attention_png_that_cannot_be_written_is_refused_before_sampling_creating_nothing(
        tmp_path, text_file, capsys, monkeypatch):
    assert run_in_process("v2", tiny_args("v2", tmp_path, text_file), capsys, monkeypatch)[0] == 0
    path, says = path_in_the_way("ends-in-a-separator", tmp_path)
    line, created = refused("v2", tmp_path, text_file, capsys, monkeypatch, "--sample", f"--attention_png={path}")
    assert says in line and "--attention_png" in line
    assert not created


def test_an_out_dir_below_a_file_is_refused_creating_nothing(tmp_path, text_file, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("notes")
    line, created = refused("bigram", tmp_path, text_file, capsys, monkeypatch,
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
@pytest.mark.parametrize(("script", "argv", "expected"), [
    ("bigram", ["--sample", "--resume"], "--sample and --resume do not go together"),
    ("gpt2", ["--sample", "--time_budget=60"], "--time_budget plans a training run and --sample does not train"),
    ("gpt2", ["--sample", "--time_budget=0"], "leave --time_budget out"),
    ("gpt2", ["--resume", "--init_from=out/gpt2"], "--init_from starts a new run from a saved model"),
    ("gpt2", ["--sample", "--init_from=out/gpt2"], "cannot go with --resume or --sample"),
])
def test_settings_that_mean_nothing_together_are_refused_before_reading_a_checkpoint(script, argv, expected,
                                                                                      in_tmp_path):
    with pytest.raises(plumbing.UserError, match=re.escape(expected)):
        plumbing.settings(import_script(script).SCRIPT, argv)  # no checkpoint anywhere: refused before looking


def test_settings_that_mean_nothing_together_are_one_line(tmp_path, text_file, capsys, monkeypatch):
    line, created = refused("bigram", tmp_path, text_file, capsys, monkeypatch, "--sample", "--resume")
    assert line.startswith("error: --sample and --resume do not go together")
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


@pytest.mark.parametrize(("error", "device"), [
    pytest.param(OUT_OF_MEMORY["CUDA"](), "CUDA", id="cuda"),
    pytest.param(OUT_OF_MEMORY["MPS"](), "MPS", id="mps"),
    pytest.param(RuntimeError(CPU_ALLOCATOR), "the CPU", id="cpu-linux"),
    pytest.param(RuntimeError(WINDOWS_ALLOCATOR), "the CPU", id="cpu-windows"),
    pytest.param(MemoryError(), "the CPU", id="memory-error"),
    pytest.param(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x16)"), None, id="a-bug"),
    pytest.param(ValueError(CPU_ALLOCATOR), None, id="not-a-runtime-error"),
    pytest.param(None, None, id="no-error"),
])
def test_out_of_memory_names_the_device_that_ran_out(error, device):
    assert plumbing.out_of_memory(error) == device


@pytest.mark.parametrize(("where", "error", "device"), [
    ("model", OUT_OF_MEMORY["CUDA"](), "CUDA"),
    ("optimizer", MemoryError(), "the CPU"),
    ("step", RuntimeError(CPU_ALLOCATOR), "the CPU"),
])
def test_memory_running_out_anywhere_is_one_line_with_the_advice(where, error, device, tmp_path, text_file, capsys,
                                                                 monkeypatch):
    def run_out(*args, **kwargs):
        raise error
    target = {"model": (torch.nn.Embedding, "reset_parameters"), "optimizer": (torch.optim.AdamW, "__init__"),
              "step": (torch.nn.functional, "cross_entropy")}[where]
    monkeypatch.setattr(*target, run_out)
    line = error_line(*run_in_process("bigram", tiny_args("bigram", tmp_path, text_file), capsys, monkeypatch))
    assert line.startswith(f"error: {device} ran out of memory") and "try a smaller --batch_size" in line


def test_a_model_larger_than_the_machine_is_refused_in_one_line_before_any_work(tmp_path, text_file, capsys,
                                                                                 monkeypatch):
    args = tiny_args("v2", tmp_path, text_file, "--n_embd=131072", "--n_head=2")  # 64 GiB per (C, C) matrix
    line = error_line(*run_in_process("v2", args, capsys, monkeypatch))
    assert line.startswith("error: a model of ") and "GiB to train, and cpu has " in line
    assert not (tmp_path / "out").exists()  # refused before any work: not even the run's folder


def the_videos_model(**changes):
    """v2.py's settings for the video's model (0.21M parameters), with changes."""
    v2 = import_script("v2")
    return {**v2.HYPERPARAMETERS, "n_embd": 64, "n_head": 4, "n_layer": 4, "block_size": 32, **changes}


def test_the_memory_check_counts_weights_gradients_and_adamw_state(monkeypatch):
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 512}  # a machine of 2 MiB
    monkeypatch.setattr(plumbing.os, "sysconf", lambda name: pages[name])
    build_model = import_script("v2").build_model
    plumbing.check_memory(the_videos_model(n_embd=16, n_head=2, n_layer=1), "cpu", build_model)  # 16 bytes each fit
    plumbing.check_memory(the_videos_model(sample=True), "cpu", build_model)  # sampling: the weights, 0.9 MB
    with pytest.raises(plumbing.UserError, match=r"^a model of 0M parameters needs about 0 GiB to train, and cpu has "
                                                 r"0 GiB; choose a smaller model \(--n_embd, --n_layer\)$"):
        plumbing.check_memory(the_videos_model(), "cpu", build_model)  # training: 4 x 0.9 MB


def test_the_memory_check_reads_the_memory_of_a_cuda_or_mps_device(monkeypatch):
    two_mib = 2 * 2**20
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: SimpleNamespace(total_memory=two_mib))
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: two_mib, raising=False)
    build_model = import_script("v2").build_model
    for dev in ("cuda", "cuda:0", "mps"):
        plumbing.check_memory(the_videos_model(sample=True), dev, build_model)
        with pytest.raises(plumbing.UserError, match=f"GiB to train, and {dev} has 0 GiB"):
            plumbing.check_memory(the_videos_model(), dev, build_model)


def test_the_memory_check_checks_nothing_where_the_system_does_not_say(monkeypatch):
    monkeypatch.delattr(plumbing.os, "sysconf", raising=False)  # Windows has no sysconf
    plumbing.check_memory(the_videos_model(n_embd=131072, n_head=2), "cpu", import_script("v2").build_model)
