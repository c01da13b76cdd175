"""Each lesson in its own script (tokenizer, batches, model, evaluation, sampling), and the plumbing every run
shares, tested once: the command line, --help, and a tiny run's evaluations, files and plot."""

import csv
import math
import re
import runpy
import shutil
import sys
from itertools import pairwise

import numpy as np
import pytest
import torch
from conftest import ROOT, SCRIPTS, TEXT, TINY, eval_lines, import_script, run_in_process, tiny_args

import plumbing

TRANSFORMERS = ("v2", "gpt2")  # the scripts whose model reads the context
VOCAB_TEXT = TEXT + "Café — naïve.\n"  # non-ASCII characters in the vocabulary
CHARS = sorted(set(VOCAB_TEXT))
STOI = {ch: i for i, ch in enumerate(CHARS)}
ITOS = dict(enumerate(CHARS))
EVAL_LINE = re.compile(r"^step \d+: train loss \d+\.\d{4}, val loss \d+\.\d{4}$")
CSV_HEADER = ["step", "train_loss", "val_loss", "elapsed_s", "lr"]
INPUT_TEXTS = {
    "crlf_line_ends": TEXT.replace("\n", "\r\n"),
    "no_trailing_newline": TEXT.rstrip("\n"),
    "non_ascii": TEXT.replace("speak", "spéak — naïve"),
}


# --- helpers ---
@pytest.fixture
def lesson(script):
    return import_script(script)


def tiny_config(script, **changes):
    """The script's hyperparameters with its TINY overrides applied, then changes."""
    module = import_script(script)
    return {**module.HYPERPARAMETERS, **plumbing.parse_command_line(TINY[script], module.SCRIPT), **changes}


def build_model(script, vocab_size, seed=0, **changes):
    """A freshly initialised model of the script's tiny config."""
    module, cfg = import_script(script), tiny_config(script, **changes)
    torch.manual_seed(seed)
    return module.build_model(cfg, vocab_size)


def token_data(module, dtype=np.int64):
    return np.array(module.encode(VOCAB_TEXT, STOI), dtype=dtype)


def eval_sets(module, block_size):
    data = token_data(module)
    n = int(0.9 * len(data))
    return {split: module.eval_windows(part, block_size, 0, "cpu") for split, part in (("train", data[:n]),
                                                                                        ("val", data[n:]))}


def load_data(module, path, block_size=8):
    """The script's own load_data of the text at path: (chars, stoi, itos, train data, val data)."""
    if module.SCRIPT.name == "gpt2":  # gpt2.py encodes the text into a token file beside it (load_tokens)
        cfg = {"input_file": str(path), "out_dir": str(path.parent / "out"), "block_size": block_size}
        return module.load_data(cfg)
    return module.load_data(str(path), block_size)


@pytest.fixture
def cli(tmp_path, text_file, capsys, monkeypatch):
    """cli(script, *extra) runs `python script.py <tiny config> *extra` in this process: (exit code, out, err)."""
    def run(script, *extra, text_path=text_file):
        return run_in_process(script, tiny_args(script, tmp_path, text_path, *extra), capsys, monkeypatch)
    return run


@pytest.fixture
def sample(script, trained, capsys, monkeypatch):
    """sample(*extra) is the text that `--sample *extra` prints, from the script's tiny trained model."""
    args = trained(script).args

    def run(*extra):
        code, out, err = run_in_process(script, [*args, "--sample", *extra], capsys, monkeypatch)
        assert code == 0, err
        header, text = out.split("\n", 1)
        assert header == "using device: cpu"
        return text.removesuffix("\n")
    return run


# --- the data ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_decode_of_encode_gives_the_text_back(lesson):
    ids = lesson.encode(VOCAB_TEXT, STOI)
    assert len(ids) == len(VOCAB_TEXT)
    assert lesson.decode(ids, ITOS) == VOCAB_TEXT


@pytest.mark.parametrize("script", SCRIPTS)
def test_encoding_an_unknown_character_raises_user_error_naming_it(lesson):
    with pytest.raises(plumbing.UserError, match="€"):
        lesson.encode("Café €", STOI)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("kind", INPUT_TEXTS)
def test_load_data_gives_the_texts_characters_and_splits_it_90_10(lesson, kind, tmp_path):
    path = tmp_path / f"{kind}.txt"
    path.write_bytes(INPUT_TEXTS[kind].encode("utf-8"))
    text = INPUT_TEXTS[kind].replace("\r\n", "\n")  # read with universal newlines, as open() does
    chars, stoi, itos, train_data, val_data = load_data(lesson, path)
    assert "".join(chars) == "".join(sorted(set(text)))
    assert len(train_data) == int(0.9 * len(text)) and len(val_data) == len(text) - len(train_data)
    assert lesson.decode([int(i) for i in [*train_data, *val_data]], itos) == text


def test_tiny_shakespeare_has_the_known_size_vocabulary_and_split(tmp_path):
    """gpt2.py's token file; v2.py's load_data (plumbing.read_text) is test_the_video.py's first chapter."""
    copy = tmp_path / "input.txt"  # the token file is written next to the text: not into the repository
    shutil.copyfile(ROOT / "input.txt", copy)  # part of the repository, as test_the_video.py asserts byte for byte
    chars, stoi, itos, train_data, val_data = load_data(import_script("gpt2"), copy)
    assert len(chars) == 65
    assert (len(train_data), len(val_data)) == (1_003_854, 111_540)  # 1_115_394 characters


# --- batches ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_get_batch_windows_are_int64_b_by_t_and_targets_are_inputs_one_character_later(lesson):
    data, B, T = token_data(lesson, np.uint8), 16, 8  # uint8: gpt2.py's token file
    x, y = lesson.get_batch(data, B, T, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (B, T)
    assert x.dtype == y.dtype == torch.int64
    windows = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(data, T + 1).tolist()}
    for x_row, y_row in zip(x.tolist(), y.tolist(), strict=True):
        assert x_row[1:] == y_row[:-1]
        assert tuple(x_row + y_row[-1:]) in windows  # a window of the data and the character after it


@pytest.mark.parametrize("script", SCRIPTS)
def test_get_batch_draws_every_start_including_the_last_and_never_runs_past_the_end(lesson):
    T = 8
    data = np.arange(T + 3)  # three possible windows
    x, y = lesson.get_batch(data, 300, T, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == {0, 1, 2}
    assert torch.equal(y, x + 1)


# --- model ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_forward_gives_b_t_v_logits_and_a_loss_only_with_targets(script):
    V, T = 65, tiny_config(script)["block_size"]
    model = build_model(script, V)
    for length in (1, T // 2, T):
        idx = torch.randint(V, (3, length))
        logits, loss = model(idx)
        assert logits.shape == (3, length, V)
        assert loss is None
        logits, loss = model(idx, torch.randint(V, (3, length)))
        assert logits.shape == (3, length, V)
        assert loss.shape == ()


# bigram's table starts N(0, 1), so its loss starts about 0.5 above ln V; GPT-2's 0.02-std init starts at ln V
@pytest.mark.parametrize("script, tolerance", [("bigram", 1.0), ("v2", 0.3), ("gpt2", 0.05)])
def test_loss_at_initialisation_is_close_to_ln_vocab_size(script, tolerance):
    V, T = 65, tiny_config(script)["block_size"]
    model = build_model(script, V).eval()
    generator = torch.Generator().manual_seed(0)
    idx, targets = torch.randint(V, (2, 64, T), generator=generator)
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(V)) < tolerance


@pytest.mark.parametrize("script", TRANSFORMERS)
def test_changing_a_later_token_leaves_earlier_logits_unchanged(script):
    V, T = 65, tiny_config(script)["block_size"]
    model = build_model(script, V).eval()
    idx = torch.randint(V, (2, T), generator=torch.Generator().manual_seed(0))
    logits, _ = model(idx)
    for t in range(T):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % V
        changed_logits, _ = model(changed)
        torch.testing.assert_close(changed_logits[:, :t], logits[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(changed_logits[:, t], logits[:, t])


@pytest.mark.parametrize("script", SCRIPTS)
def test_tiny_model_overfits_one_batch(lesson, script):
    cfg = tiny_config(script)
    data = token_data(lesson)
    model = build_model(script, len(CHARS), dropout=0.0)
    x, y = lesson.get_batch(data, cfg["batch_size"], cfg["block_size"], torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    _, first_loss = model(x, y)
    for _ in range(150):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first_loss.item()


@pytest.mark.parametrize("script, kwargs", [
    pytest.param("bigram", {}, id="bigram"),
    pytest.param("v2", {}, id="v2"),
    pytest.param("gpt2", {"use_cache": True}, id="gpt2-kv-cache"),
    pytest.param("gpt2", {"use_cache": False}, id="gpt2-no-cache"),
])
def test_generate_appends_max_new_tokens_in_vocabulary_even_past_block_size(script, kwargs):
    V, T = 65, tiny_config(script)["block_size"]
    model = build_model(script, V).eval()
    generator = torch.Generator().manual_seed(0)
    for context in (1, T + 5):  # a context longer than block_size is cropped, not an error
        idx = torch.randint(V, (2, context), generator=generator)
        out = model.generate(idx, 2 * T + 3, temperature=1.0, top_k=0, generator=generator, **kwargs)
        assert out.shape == (2, context + 2 * T + 3)
        assert torch.equal(out[:, :context], idx)
        assert 0 <= out.min() and out.max() < V


def test_bigram_default_config_has_one_row_of_logits_per_character():
    bigram = import_script("bigram")
    model = bigram.build_model(dict(bigram.HYPERPARAMETERS), 65)
    assert sum(p.numel() for p in model.parameters()) == 65 * 65


def test_v2_default_config_has_the_parameter_count_of_the_videos_model():
    v2 = import_script("v2")
    cfg = v2.HYPERPARAMETERS
    V, T, C, L = 65, cfg["block_size"], cfg["n_embd"], cfg["n_layer"]
    per_layer = (3 * C * C  # key, query and value of n_head heads of head_size C / n_head, without biases
                 + C * C + C  # proj
                 + C * 4 * C + 4 * C + 4 * C * C + C  # ffwd
                 + 2 * 2 * C)  # ln1, ln2
    expected = V * C + T * C + L * per_layer + 2 * C + C * V + V  # embeddings, blocks, ln_f, lm_head
    assert expected == 209_729  # the video prints 0.209729 M parameters
    model = v2.build_model(dict(cfg), V)
    assert sum(p.numel() for p in model.parameters()) == expected


# --- attention picture ---
def attention_layers(script, model):
    """Each layer's attention module: v2.py's MultiHeadAttention, gpt2.py's CausalSelfAttention."""
    return [block.sa for block in model.blocks] if script == "v2" else [block.attn for block in model.transformer.h]


@pytest.mark.parametrize("script", TRANSFORMERS)
def test_attention_weights_are_what_the_attention_layers_compute(script):
    module, cfg = import_script(script), tiny_config(script, n_layer=2)
    model = build_model(script, 65, n_layer=2, dropout=0.0).eval()
    T, C, nh = cfg["block_size"], cfg["n_embd"], cfg["n_head"]
    idx = torch.randint(65, (1, T), generator=torch.Generator().manual_seed(0))
    caught = []  # each attention layer's input and output
    hooks = [layer.register_forward_hook(lambda _, args, out: caught.append((args[0], out)))
             for layer in attention_layers(script, model)]
    weights = module.attention_weights(model, idx)
    for hook in hooks:
        hook.remove()
    assert weights.shape == (2, nh, T, T)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, nh, T), rtol=0, atol=1e-5)  # rows sum to 1
    assert torch.all(weights.triu(1) == 0)  # the future gets nothing
    for number, (layer, (x, out)) in enumerate(zip(attention_layers(script, model), caught, strict=True)):
        if script == "v2":
            v = torch.stack([head.value(x)[0] for head in layer.heads])  # (nh, T, hs)
            project = layer.proj
        else:
            v = layer.c_attn(x).split(C, dim=2)[2].view(T, nh, C // nh).transpose(0, 1)  # (nh, T, hs)
            project = layer.c_proj
        merged = (weights[number] @ v).transpose(0, 1).reshape(T, C)  # (T, C): the heads side by side
        torch.testing.assert_close(project(merged), out[0], rtol=0, atol=1e-5)


# --- evaluation ---
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("n_tokens, block_size, max_windows, count", [
    (100, 8, 0, 12), (100, 8, 5, 5), (100, 8, 50, 12), (97, 8, 0, 12), (96, 8, 0, 11), (9, 8, 0, 1),
])
def test_eval_windows_are_non_overlapping_windows_within_the_split(lesson, n_tokens, block_size, max_windows, count):
    x, y = lesson.eval_windows(np.arange(n_tokens), block_size, max_windows, "cpu")
    starts = x[:, 0].tolist()
    assert x.shape == y.shape == (count, block_size)
    assert torch.equal(y, x + 1)  # y is x one character on, inside the split
    assert all(b - a >= block_size for a, b in pairwise(starts))
    assert all(0 <= start and start + block_size + 1 <= n_tokens for start in starts)


@pytest.mark.parametrize("script", SCRIPTS)
def test_eval_windows_are_int64_on_the_device_asked_for(lesson):
    x, y = lesson.eval_windows(np.arange(100, dtype=np.uint8), 8, 0, "meta")  # meta: a device that is not the CPU
    assert x.device.type == y.device.type == "meta"
    assert x.dtype == y.dtype == torch.int64


@pytest.mark.parametrize("script", TRANSFORMERS)  # the scripts with dropout, which evaluation must switch off
def test_estimate_loss_is_deterministic_and_leaves_the_model_in_train_mode(lesson, script):
    model = build_model(script, len(CHARS), dropout=0.5)
    sets = eval_sets(lesson, tiny_config(script)["block_size"])
    x, y = sets["val"]
    assert model(x, y)[1].item() != model(x, y)[1].item()  # in train mode dropout makes two passes differ
    first = lesson.estimate_loss(model, sets, 64)
    assert lesson.estimate_loss(model, sets, 64) == first
    assert set(first) == {"train", "val"}
    assert all(module.training for module in model.modules())


@pytest.mark.parametrize("script", SCRIPTS)
def test_estimate_loss_is_the_mean_over_windows_whatever_the_eval_batch_size(lesson, script):
    model = build_model(script, len(CHARS))
    sets = eval_sets(lesson, tiny_config(script)["block_size"])
    whole, in_sevens = lesson.estimate_loss(model, sets, 10_000), lesson.estimate_loss(model, sets, 7)
    assert whole == pytest.approx(in_sevens, rel=1e-5)


# --- the command line (plumbing.py, tested once) ---
@pytest.mark.parametrize("arg, name, value", [
    ("--batch_size=7", "batch_size", 7),
    ("--learning_rate=3e-4", "learning_rate", 3e-4),
    ("--learning_rate=1", "learning_rate", 1.0),
    ("--sample", "sample", True),
    ("--sample=false", "sample", False),
    ("--resume=1", "resume", True),
    ("--prompt=ROMEO:", "prompt", "ROMEO:"),
    ("--prompt=a=b", "prompt", "a=b"),
    ("--prompt=", "prompt", ""),
])
def test_command_line_values_take_the_default_type(arg, name, value):
    overrides = plumbing.parse_command_line([arg], import_script("bigram").SCRIPT)
    assert overrides == {name: value}
    assert type(overrides[name]) is type(value)


@pytest.mark.parametrize("arg", [
    "--no_such_option=1", "-batch_size=4", "batch_size=4", "--batch_size=abc", "--batch_size=1.5", "--batch_size",
    "--learning_rate=fast", "--sample=maybe",
])
def test_command_line_rejects_bad_options_listing_the_valid_ones(arg):
    script = import_script("bigram").SCRIPT
    with pytest.raises(plumbing.UserError) as error:
        plumbing.parse_command_line([arg], script)
    assert all(f"--{name}" in str(error.value) for name in script.hyperparameters)


# --- --help ---
def lesson_file(tmp_path, *block):
    """A small script of its own, tiny.py, whose hyperparameter block is these lines: its plumbing.Script."""
    path = tmp_path / "tiny.py"
    path.write_text('"""A tiny lesson: what --help prints first."""\n\n# hyperparameters\n' + "\n".join(block)
                    + "\n# every name above is a hyperparameter\nHYPERPARAMETERS = {k: v for k, v in globals().items()"
                    " if type(v) in (bool, int, float, str) and not k.startswith('_')}\n", encoding="utf-8")
    return plumbing.Script("tiny", str(path), runpy.run_path(str(path))["HYPERPARAMETERS"])


TINY_BLOCK = ("batch_size = 4  # sequences per step (B)", "learning_rate = 1e-3  # AdamW step size",
              "# files and device", 'out_dir = "out/tiny"  # where the model is saved',
              'prompt = ""  # text the sample continues', 'device = ""  # where to run',
              "sample = False  # --sample: generate instead of training")


def test_help_prints_the_docstring_then_each_hyperparameter_line_with_its_default_comment_and_valid_values(
        tmp_path, capsys):
    plumbing.print_help(lesson_file(tmp_path, *TINY_BLOCK))
    assert capsys.readouterr().out.splitlines() == [
        "usage: python tiny.py [--name=value ...]",
        "",
        "A tiny lesson: what --help prints first.",
        "",
        "hyperparameters:",
        "  --batch_size=4             sequences per step (B); valid: [1, inf)",
        "  --learning_rate=1e-3       AdamW step size; valid: (0, inf)",
        "files and device:",
        "  --out_dir=out/tiny         where the model is saved",
        '  --prompt=""                text the sample continues',
        '  --device=""                where to run; valid: cuda, mps, cpu, ""',
        "  --sample=False             --sample: generate instead of training",
    ]


def test_help_shows_a_setting_the_learner_added_that_plumbing_does_not_know(tmp_path, capsys):
    plumbing.print_help(lesson_file(tmp_path, *TINY_BLOCK, "n_experts = 3  # experts per layer"))
    assert capsys.readouterr().out.splitlines()[-1] == "  --n_experts=3              experts per layer"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_or_h_on_the_command_line_prints_help_and_exits_0(flag, capsys):
    script = import_script("bigram").SCRIPT
    with pytest.raises(SystemExit) as exit_:
        plumbing.parse_command_line(["--batch_size=7", flag], script)
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python bigram.py [--name=value ...]")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_every_hyperparameter_of_the_script(lesson, script, capsys, monkeypatch):
    code, out, err = run_in_process(script, ["--help"], capsys, monkeypatch)
    assert code == 0, err
    assert out.startswith(f"usage: python {script}.py [--name=value ...]")
    shown = [line.split("=")[0].strip() for line in out.splitlines() if line.startswith("  --")]
    assert shown == [f"--{name}" for name in lesson.HYPERPARAMETERS]


# --- sampling: each script's own generate and sample_next, from one tiny trained model per script ---
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("prompt, start", [pytest.param("First Citizen:", "First Citizen:", id="prompt"),
                                           pytest.param("", "\n", id="empty-prompt-starts-at-newline")])
def test_sample_continues_the_prompt_with_max_new_tokens_characters(sample, script, prompt, start):
    text = sample(f"--prompt={prompt}")
    assert text.startswith(start)
    assert len(text) == len(start) + tiny_config(script)["max_new_tokens"]
    assert set(text) <= set(TEXT)


@pytest.mark.parametrize("script", SCRIPTS)
def test_sample_at_temperature_0_is_the_same_whatever_the_seed(sample):
    assert sample("--temperature=0", "--seed=1") == sample("--temperature=0", "--seed=2")


@pytest.mark.parametrize("script", SCRIPTS)
def test_sample_with_the_same_seed_repeats_the_text(sample):
    assert sample("--seed=5") == sample("--seed=5")


@pytest.mark.parametrize("script", SCRIPTS)
def test_sample_with_top_k_larger_than_the_vocabulary_is_sampling_from_all(sample):
    assert sample("--top_k=1000") == sample("--top_k=0")


@pytest.mark.real_plots
@pytest.mark.parametrize("script", TRANSFORMERS)
def test_attention_png_draws_the_prompts_weights_and_a_long_prompt_its_last_block_size(script, trained, tmp_path,
                                                                                      capsys, monkeypatch):
    png = tmp_path / "pictures" / "attention.png"
    long_prompt = "First Citizen:\nBefore we proceed" * 2  # longer than the tiny block_size
    code, out, err = run_in_process(script, [*trained(script).args, "--sample", f"--prompt={long_prompt}",
                                             f"--attention_png={png}", "--max_new_tokens=5"], capsys, monkeypatch)
    assert code == 0, err
    T = tiny_config(script)["block_size"]
    assert f"the picture shows its last {T}" in out
    assert f"attention weights of {T} characters (1 layers x 2 heads) in {png}" in out
    assert png.read_bytes().startswith(b"\x89PNG")
    assert out.split("\n", 1)[1].startswith(long_prompt)  # the sample itself continues the whole prompt


# --- each script's training loop: evaluations and its checkpoint, from the same tiny runs ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_tiny_run_evaluates_every_eval_interval_and_after_the_last_step(script, trained):
    out = trained(script).out
    assert "using device: cpu" in out.splitlines()
    cfg = tiny_config(script)
    steps = [int(line.split()[1].rstrip(":")) for line in eval_lines(out)]
    assert steps == sorted({*range(0, cfg["max_iters"], cfg["eval_interval"]), cfg["max_iters"]})


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_scripts_checkpoint_says_which_script_saved_it(script, trained):
    assert torch.load(trained(script).out_dir / "ckpt.pt", weights_only=True)["script"] == script


# --- a run's files and plot (plumbing.py): through bigram.py, the fastest script ---
@pytest.mark.real_plots
def test_tiny_run_prints_evaluations_and_writes_checkpoint_loss_log_and_plot(tmp_path, cli):
    code, out, err = cli("bigram")
    assert code == 0, err
    lines = eval_lines(out)
    assert lines and all(EVAL_LINE.match(line) for line in lines), lines
    run_dir = tmp_path / "out" / "bigram"
    with open(run_dir / "losses.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == CSV_HEADER
    assert [f"step {s}: train loss {train}, val loss {val}" for s, train, val, *_ in rows] == lines
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["script"] == "bigram"
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("script, shown", [("bigram", "{:,} parameters"), ("v2", "{:.2f}M parameters"),
                                           ("gpt2", "{:.2f}M parameters")])
def test_a_run_prints_its_parameter_count_readably(script, shown, trained):
    run = trained(script)
    model = import_script(script).build_model(tiny_config(script), len(set(TEXT)))
    count = sum(p.numel() for p in model.parameters())
    assert shown.format(count if script == "bigram" else count / 1e6) in run.out.splitlines()
    if script == "bigram":  # a table of a few thousand numbers: 0.00M would say nothing
        assert count < 10_000


@pytest.mark.parametrize("kind", INPUT_TEXTS)
def test_tiny_run_trains_on_input_file(kind, tmp_path, cli):
    path = tmp_path / f"{kind}.txt"
    path.write_bytes(INPUT_TEXTS[kind].encode("utf-8"))
    code, out, err = cli("bigram", text_path=path)
    assert code == 0, err
    with open(path, encoding="utf-8") as f:  # universal newlines: CRLF reads as "\n"
        chars = "".join(sorted(set(f.read())))
    assert torch.load(tmp_path / "out" / "bigram" / "ckpt.pt", weights_only=True)["chars"] == chars


def test_without_matplotlib_a_run_says_how_to_get_the_plot_and_goes_on(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    code, out, err = cli("bigram")
    assert code == 0, err
    assert out.count("pip install matplotlib") == 1
    assert (tmp_path / "out" / "bigram" / "losses.csv").exists()
    assert not (tmp_path / "out" / "bigram" / "loss.png").exists()


def test_a_matplotlib_that_fails_to_import_is_named_with_its_reason_and_the_run_goes_on(cli, tmp_path, monkeypatch):
    broken = tmp_path / "site" / "matplotlib"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("numpy.core.multiarray failed to import")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)  # import afresh: the broken copy comes first on the path
    code, out, err = cli("bigram")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("loss log in"))
    assert "matplotlib is installed but does not import" in line and "numpy.core.multiarray failed to import" in line
    assert "pip install --upgrade matplotlib" in line
    assert not (tmp_path / "out" / "bigram" / "loss.png").exists()
