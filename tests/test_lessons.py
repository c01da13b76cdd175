"""Behaviour every lesson script shares: tokenizer, batches, model, evaluation, options, shared blocks, runs."""

import ast
import csv
import difflib
import math
import re
import sys
from itertools import pairwise

import numpy as np
import pytest
import torch
from conftest import ROOT, SCRIPTS, TEXT, TINY, eval_lines, import_script, run_in_process, tiny_args

TRANSFORMERS = ("v2", "gpt2")  # the scripts whose model reads the context
VOCAB_TEXT = TEXT + "Café — naïve.\n"  # non-ASCII characters in the vocabulary
CHARS = sorted(set(VOCAB_TEXT))
STOI = {ch: i for i, ch in enumerate(CHARS)}
ITOS = dict(enumerate(CHARS))
EVAL_LINE = re.compile(r"^step \d+: train loss \d+\.\d{4}, val loss \d+\.\d{4}$")
CSV_HEADER = ["step", "train_loss", "val_loss", "elapsed_s", "lr"]
SHARED_BLOCK_START = re.compile(r"^# --- same in (every script|\w+\.py and \w+\.py): (.+) ---$")
SHARED_BLOCK_END = "# --- end ---"
HYPERPARAMETER_LINE = re.compile(r"^([a-z_][a-z0-9_]*) = (\S.*?)  # (\S.*)$")
GROUP_HEADING = re.compile(r"^# [a-z][a-z ,]*$")
RULER = "# ---- plumbing: not in the video (command line, checks, files, checkpoints) ----"
LAYOUT = {"bigram": (205, 125), "v2": (300, 135), "gpt2": (450, 170)}  # (lines above the ruler, first nn.Module at)
MAX_FUNCTION_LINES = 70
LESSON_ORDER = ("def load_data", "def encode", "def decode", "def get_batch", "def estimate_loss", "class ",
                "def train", "def generate_text", "def sample_next")


# --- helpers ---
@pytest.fixture
def lesson(script):
    return import_script(script)


def tiny_config(script, **changes):
    """The script's hyperparameters with its TINY overrides applied, then changes."""
    module = import_script(script)
    return {**module.HYPERPARAMETERS, **module.parse_command_line(TINY[script], module.HYPERPARAMETERS), **changes}


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
    return {split: module.eval_windows(part, block_size, 0) for split, part in (("train", data[:n]), ("val", data[n:]))}


def source_lines(script):
    return (ROOT / f"{script}.py").read_text(encoding="utf-8").splitlines()


def hyperparameter_lines(script):
    """{name: (value source, comment)} of the hyperparameter block, whose other lines are `# group` headings."""
    lines = source_lines(script)
    block = lines[lines.index("# hyperparameters") + 1:]
    block = block[:next(i for i, line in enumerate(block) if line.startswith("# every name above"))]
    bad = [line for line in block if not HYPERPARAMETER_LINE.match(line) and not GROUP_HEADING.match(line)]
    assert not bad, f"{script}.py: neither `name = value  # comment` nor a `# group` heading: {bad}"
    return {m[1]: (m[2], m[3]) for m in map(HYPERPARAMETER_LINE.match, block) if m}


def block_scripts(scope):
    """The scripts a block is shared by: `every script`, or `v2.py and gpt2.py`."""
    return SCRIPTS if scope == "every script" else tuple(name.removesuffix(".py") for name in scope.split(" and "))


def shared_blocks(script):
    """{name: lines} of the `# --- same in SCOPE: NAME ---` ... `# --- end ---` blocks of a script; the first line
    of each body is its scope (`every script`, or `v2.py and gpt2.py`)."""
    blocks, name, body = {}, None, []
    for number, line in enumerate((ROOT / f"{script}.py").read_text(encoding="utf-8").splitlines(), 1):
        where = f"{script}.py:{number}"
        if start := SHARED_BLOCK_START.match(line):
            assert name is None, f"{where}: block {start[2]!r} starts inside block {name!r}"
            assert start[2] not in blocks, f"{where}: block {start[2]!r} appears twice"
            assert script in block_scripts(start[1]), f"{where}: a block of {start[1]} in {script}.py"
            name, body = start[2], [start[1]]
        elif line == SHARED_BLOCK_END:
            assert name is not None, f"{where}: {SHARED_BLOCK_END!r} outside any block"
            blocks[name], name = body, None
        elif name is not None:
            body.append(line)
    assert name is None, f"{script}.py: block {name!r} has no {SHARED_BLOCK_END!r}"
    return blocks


@pytest.fixture
def cli(tmp_path, text_file, capsys, monkeypatch):
    """cli(script, *extra) runs `python script.py <tiny config> *extra` in this process: (exit code, out, err)."""
    def run(script, *extra, text_path=text_file):
        return run_in_process(script, tiny_args(script, tmp_path, text_path, *extra), capsys, monkeypatch)
    return run


@pytest.fixture
def sample(script, cli):
    """Train the script's tiny model; then sample(*extra) is the text that `--sample *extra` prints."""
    code, _, err = cli(script)
    assert code == 0, err

    def run(*extra):
        code, out, err = cli(script, "--sample", *extra)
        assert code == 0, err
        header, text = out.split("\n", 1)
        assert header == "using device: cpu"
        return text.removesuffix("\n")
    return run


# --- tokenizer ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_decode_of_encode_gives_the_text_back(lesson):
    ids = lesson.encode(VOCAB_TEXT, STOI)
    assert len(ids) == len(VOCAB_TEXT)
    assert lesson.decode(ids, ITOS) == VOCAB_TEXT


@pytest.mark.parametrize("script", SCRIPTS)
def test_encoding_an_unknown_character_raises_user_error_naming_it(lesson):
    with pytest.raises(lesson.UserError, match="€"):
        lesson.encode("Café €", STOI)


# --- batches ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_windows_are_int64_b_by_t_and_targets_are_inputs_one_character_later(lesson):
    data, T = token_data(lesson, np.uint8), 8
    starts = [0, 5, len(data) - T - 1]
    x, y = lesson.get_windows(data, starts, T)
    assert x.shape == y.shape == (len(starts), T)
    assert x.dtype == y.dtype == torch.int64
    for row, start in enumerate(starts):
        assert x[row].tolist() == data[start:start + T].tolist()
        assert y[row].tolist() == data[start + 1:start + 1 + T].tolist()


@pytest.mark.parametrize("script", SCRIPTS)
def test_get_batch_draws_windows_of_the_data_and_their_next_characters(lesson):
    data, B, T = token_data(lesson, np.uint8), 16, 8
    x, y = lesson.get_batch(data, B, T, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (B, T)
    assert x.dtype == y.dtype == torch.int64
    windows = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(data, T + 1).tolist()}
    for x_row, y_row in zip(x.tolist(), y.tolist(), strict=True):
        assert x_row[1:] == y_row[:-1]
        assert tuple(x_row + y_row[-1:]) in windows


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


@pytest.mark.real_plots
@pytest.mark.parametrize("script", TRANSFORMERS)
def test_attention_png_draws_the_prompts_weights_and_a_long_prompt_its_last_block_size(script, cli, tmp_path):
    code, _, err = cli(script)
    assert code == 0, err
    png = tmp_path / "pictures" / "attention.png"
    long_prompt = "First Citizen:\nBefore we proceed" * 2  # longer than the tiny block_size
    code, out, err = cli(script, "--sample", f"--prompt={long_prompt}", f"--attention_png={png}", "--max_new_tokens=5")
    assert code == 0, err
    T = tiny_config(script)["block_size"]
    assert f"the picture shows its last {T}" in out
    assert f"attention weights of {T} characters (1 layers x 2 heads) in {png}" in out
    assert png.read_bytes().startswith(b"\x89PNG")
    assert out.split("\n", 1)[1].startswith(long_prompt)  # the sample itself continues the whole prompt


# --- evaluation ---
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("n_tokens, block_size, max_windows, count", [
    (100, 8, 0, 12), (100, 8, 5, 5), (100, 8, 50, 12), (97, 8, 0, 12), (96, 8, 0, 11), (9, 8, 0, 1),
])
def test_eval_windows_are_non_overlapping_windows_within_the_split(lesson, n_tokens, block_size, max_windows, count):
    x, y = lesson.eval_windows(np.arange(n_tokens), block_size, max_windows)
    starts = x[:, 0].tolist()
    assert x.shape == y.shape == (count, block_size)
    assert torch.equal(y, x + 1)  # y is x one character on, inside the split
    assert all(b - a >= block_size for a, b in pairwise(starts))
    assert all(0 <= start and start + block_size + 1 <= n_tokens for start in starts)


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


# --- command-line options ---
@pytest.mark.parametrize("script", SCRIPTS)
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
def test_command_line_values_take_the_default_type(lesson, arg, name, value):
    overrides = lesson.parse_command_line([arg], lesson.HYPERPARAMETERS)
    assert overrides == {name: value}
    assert type(overrides[name]) is type(value)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("arg", [
    "--no_such_option=1", "-batch_size=4", "batch_size=4", "--batch_size=abc", "--batch_size=1.5", "--batch_size",
    "--learning_rate=fast", "--sample=maybe",
])
def test_command_line_rejects_bad_options_listing_the_valid_ones(lesson, arg):
    with pytest.raises(lesson.UserError) as error:
        lesson.parse_command_line([arg], lesson.HYPERPARAMETERS)
    assert all(f"--{name}" in str(error.value) for name in lesson.HYPERPARAMETERS)


# --- the three files in step ---
def test_every_script_has_every_block_it_shares():
    blocks = {script: shared_blocks(script) for script in SCRIPTS}
    scopes = {name: body[0] for found in blocks.values() for name, body in found.items()}
    assert "every script" in scopes.values(), "no `# --- same in every script: NAME ---` blocks found"
    missing = [f"{script}.py lacks {name!r} ({scope})" for name, scope in scopes.items()
               for script in block_scripts(scope) if name not in blocks[script]]
    assert not missing, "shared blocks missing:\n" + "\n".join(missing)


def test_shared_blocks_are_identical_in_every_script_that_shares_them():
    blocks = {script: shared_blocks(script) for script in SCRIPTS}
    diffs = []
    for script, found in blocks.items():
        for name, body in found.items():
            first = block_scripts(body[0])[0]
            if script != first and name in blocks[first] and body != blocks[first][name]:
                diffs.append("\n".join(difflib.unified_diff(blocks[first][name], body, f"{first}.py: {name}",
                                                            f"{script}.py: {name}", lineterm="")))
    assert not diffs, "shared blocks differ:\n" + "\n".join(diffs)


def test_every_shared_block_is_on_the_same_side_of_the_ruler_in_every_script():
    sides = {}
    for script in SCRIPTS:
        lines = source_lines(script)
        ruler = lines.index(RULER)
        for number, line in enumerate(lines):
            if start := SHARED_BLOCK_START.match(line):
                sides.setdefault(start[2], {})[script] = "lesson" if number < ruler else "plumbing"
    assert sides
    mixed = {name: found for name, found in sides.items() if len(set(found.values())) > 1}
    assert not mixed, f"shared blocks on different sides of the ruler: {mixed}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_lesson_comes_first_in_the_videos_order_and_the_plumbing_below_one_ruler(script):
    lines = source_lines(script)
    assert lines.count(RULER) == 1, f"{script}.py needs exactly one ruler line: {RULER!r}"
    ruler = lines.index(RULER) + 1  # line numbers count from 1
    max_above, max_first_module = LAYOUT[script]
    assert ruler - 1 <= max_above, f"{script}.py: {ruler - 1} lines above the ruler, more than {max_above}"
    tree = ast.parse("\n".join(lines))
    modules = [node.lineno for node in tree.body if isinstance(node, ast.ClassDef)
               and any(ast.unparse(base) == "nn.Module" for base in node.bases)]
    assert modules[0] <= max_first_module, f"{script}.py: the first nn.Module is at line {modules[0]}"
    assert max(modules) < ruler
    found = [next(i for i, line in enumerate(lines) if line.startswith(marker)) for marker in LESSON_ORDER]
    assert found == sorted(found), f"{script}.py: the lesson is not in the order {LESSON_ORDER}"
    assert found[-1] < ruler
    assert ast.unparse(tree.body[-1].test) == "__name__ == '__main__'"  # the entry point comes last


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_function_is_longer_than_70_lines(script):
    tree = ast.parse((ROOT / f"{script}.py").read_text(encoding="utf-8"))
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{script}.py: {long}"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_hyperparameter_with_its_default_and_comment(script, flag, capsys, monkeypatch):
    code, out, err = run_in_process(script, [flag], capsys, monkeypatch)
    assert code == 0, err
    assert out.startswith(f"usage: python {script}.py [--name=value ...]")
    shown = {line.split()[0]: line for line in out.splitlines() if line.startswith("  --")}
    module = import_script(script)
    for name, (value, comment) in hyperparameter_lines(script).items():
        default = module.HYPERPARAMETERS[name]
        option = f"--{name}=" + (default if isinstance(default, str) and default else value)  # 1e-3, out/v2, ""
        assert option in shown, f"{option} not in --help"
        rule = module.VALID[name]
        valid = f"; valid: {module.describe_valid(rule)}" if rule is not None else ""
        assert shown[option].endswith(comment + valid)
    assert len(shown) == len(module.HYPERPARAMETERS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_hyperparameters_section_lists_every_option_as_name_value_comment(lesson, script):
    lines = hyperparameter_lines(script)
    assert list(lines) == list(lesson.HYPERPARAMETERS)
    for name, (value, _) in lines.items():
        assert ast.literal_eval(value) == lesson.HYPERPARAMETERS[name], name
        assert type(ast.literal_eval(value)) is type(lesson.HYPERPARAMETERS[name]), name


def test_hyperparameters_shared_across_scripts_have_identical_comments():
    comments = {script: {name: comment for name, (_, comment) in hyperparameter_lines(script).items()}
                for script in SCRIPTS}
    names = sorted(set().union(*comments.values()))
    differing = []
    for name in names:
        seen = {script: found[name] for script, found in comments.items() if name in found}
        if len(set(seen.values())) > 1:
            differing.append(f"{name}: " + "; ".join(f"{script}.py {comment!r}" for script, comment in seen.items()))
    assert not differing, "shared hyperparameters commented differently:\n" + "\n".join(differing)


@pytest.mark.parametrize("script", SCRIPTS)
def test_importing_a_script_prints_nothing_and_reads_no_argv_or_file(script, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no input.txt here: reading or downloading it would print or create files
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--batch_size=7", "--no_such_option"])
    monkeypatch.delitem(sys.modules, script, raising=False)  # import afresh; the cached module comes back after
    module = import_script(script)
    assert capsys.readouterr() == ("", "")
    assert module.HYPERPARAMETERS["batch_size"] != 7
    assert list(tmp_path.iterdir()) == []


# --- runs ---
@pytest.mark.real_plots
@pytest.mark.parametrize("script", SCRIPTS)
def test_tiny_run_prints_evaluations_and_writes_checkpoint_loss_log_and_plot(script, tmp_path, cli):
    code, out, err = cli(script)
    assert code == 0, err
    assert "using device: cpu" in out.splitlines()
    lines = eval_lines(out)
    assert all(EVAL_LINE.match(line) for line in lines), lines
    cfg = tiny_config(script)
    steps = [int(line.split()[1].rstrip(":")) for line in lines]
    assert steps == sorted({*range(0, cfg["max_iters"], cfg["eval_interval"]), cfg["max_iters"]})
    run_dir = tmp_path / "out" / script
    with open(run_dir / "losses.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == CSV_HEADER
    assert [f"step {s}: train loss {train}, val loss {val}" for s, train, val, *_ in rows] == lines
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["script"] == script
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")


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


INPUT_TEXTS = {
    "crlf_line_ends": TEXT.replace("\n", "\r\n"),
    "no_trailing_newline": TEXT.rstrip("\n"),
    "non_ascii": TEXT.replace("speak", "spéak — naïve"),
}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("kind", INPUT_TEXTS)
def test_tiny_run_trains_on_input_file(script, kind, tmp_path, cli):
    path = tmp_path / f"{kind}.txt"
    path.write_bytes(INPUT_TEXTS[kind].encode("utf-8"))
    code, out, err = cli(script, text_path=path)
    assert code == 0, err
    with open(path, encoding="utf-8") as f:  # universal newlines: CRLF reads as "\n"
        chars = "".join(sorted(set(f.read())))
    assert torch.load(tmp_path / "out" / script / "ckpt.pt", weights_only=True)["chars"] == chars


def load_vocabulary_and_length(module, path, tmp_path):
    """(chars, number of characters) of a text, as the script's training reads it."""
    if hasattr(module, "load_tokens"):
        copy = tmp_path / path.name  # the token file is written next to the text: not into the repository
        copy.write_bytes(path.read_bytes())
        chars, data = module.load_tokens(str(copy), str(tmp_path / "out"))
        return chars, len(data)
    text = module.read_text(str(path))
    return "".join(sorted(set(text))), len(text)


@pytest.mark.parametrize("script", SCRIPTS)
def test_tiny_shakespeare_has_the_known_size_vocabulary_and_split(lesson, tmp_path):
    path = ROOT / "input.txt"  # part of the repository, as test_the_video.py asserts byte for byte
    chars, n_chars = load_vocabulary_and_length(lesson, path, tmp_path)
    assert n_chars == 1_115_394
    assert len(chars) == 65
    n_train = int(0.9 * n_chars)
    assert (n_train, n_chars - n_train) == (1_003_854, 111_540)


# --- runs as a user makes them ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_without_matplotlib_a_run_says_how_to_get_the_plot_and_goes_on(script, cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    code, out, err = cli(script)
    assert code == 0, err
    assert out.count("pip install matplotlib") == 1
    assert (tmp_path / "out" / script / "losses.csv").exists()
    assert not (tmp_path / "out" / script / "loss.png").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_matplotlib_that_fails_to_import_is_named_with_its_reason_and_the_run_goes_on(script, cli, tmp_path,
                                                                                       monkeypatch):
    broken = tmp_path / "site" / "matplotlib"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("numpy.core.multiarray failed to import")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)  # import afresh: the broken copy comes first on the path
    code, out, err = cli(script)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("loss log in"))
    assert "matplotlib is installed but does not import" in line and "numpy.core.multiarray failed to import" in line
    assert "pip install --upgrade matplotlib" in line
    assert not (tmp_path / "out" / script / "loss.png").exists()
