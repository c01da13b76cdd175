"""What only gpt2.py has: GPT-2's modules and init, the optimizer recipe, the KV cache, the token file, resuming."""

import math
import os
import re
import types
from contextlib import nullcontext
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEXT, eval_lines, import_script, run_in_process, tiny_args

import plumbing

gpt2 = import_script("gpt2")
CHARS = sorted(set(TEXT))
V = len(CHARS)
TINY_MODEL = dict(block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
LAYER_PARAMETERS = [f"{module}.{kind}" for module in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc",
                                                       "mlp.c_proj") for kind in ("weight", "bias")]


# --- helpers ---
@pytest.fixture(scope="module")
def default_model():
    """The default config's model (about 10.7M parameters), built once."""
    torch.manual_seed(0)
    return gpt2.build_model(gpt2.HYPERPARAMETERS, 65)


def tiny_gpt(seed=0, **changes):
    torch.manual_seed(seed)
    return gpt2.GPT(gpt2.GPTConfig(vocab_size=V, **{**TINY_MODEL, **changes}))


def randomized(model, std=0.3, seed=0):
    """Every parameter drawn anew, so that biases and LayerNorms count in a comparison (eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std + (1.0 if p.dim() == 1 else 0.0))
    return model.eval()


def random_tokens(B, T, seed=0):
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(seed))


def reference_gpt2_logits(state, idx, n_layer, n_head):
    """GPT-2's forward pass written out from its state dict, one formula per line."""
    def layer_norm(x, name):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * state[f"{name}.weight"] + state[f"{name}.bias"]

    def linear(x, name):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    B, T = idx.shape
    wte = state["transformer.wte.weight"]
    x = wte[idx] + state["transformer.wpe.weight"][:T]
    C = x.size(-1)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for layer in range(n_layer):
        h = f"transformer.h.{layer}"
        qkv = linear(layer_norm(x, f"{h}.ln_1"), f"{h}.attn.c_attn")
        q, k, v = (qkv[..., i * C:(i + 1) * C].view(B, T, n_head, C // n_head).transpose(1, 2) for i in range(3))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // n_head)
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        x = x + linear((att @ v).transpose(1, 2).reshape(B, T, C), f"{h}.attn.c_proj")
        x = x + linear(gelu(linear(layer_norm(x, f"{h}.ln_2"), f"{h}.mlp.c_fc")), f"{h}.mlp.c_proj")
    return layer_norm(x, "transformer.ln_f") @ wte.T


@pytest.fixture
def gpt2_cli(tmp_path, text_file, capsys, monkeypatch):
    """gpt2_cli(*extra) runs `python gpt2.py <tiny config> *extra` in this process: (exit code, out, err)."""
    def run(*extra):
        return run_in_process("gpt2", tiny_args("gpt2", tmp_path, text_file, *extra), capsys, monkeypatch)
    return run


# --- GPT-2's architecture ---
def test_default_config_has_gpt2_parameter_count(default_model):
    V_, T, C, L = 65, 256, 384, 6
    per_layer = (2 * C  # ln_1
                 + C * 3 * C + 3 * C  # attn.c_attn
                 + C * C + C  # attn.c_proj
                 + 2 * C  # ln_2
                 + C * 4 * C + 4 * C  # mlp.c_fc
                 + 4 * C * C + C)  # mlp.c_proj
    expected = V_ * C + T * C + L * per_layer + 2 * C  # wte, wpe, blocks, ln_f; lm_head is wte (tied)
    assert expected == 10_770_816
    assert sum(p.numel() for p in default_model.parameters()) == expected


def test_lm_head_is_tied_to_the_token_embedding(default_model):
    assert default_model.lm_head.weight is default_model.transformer.wte.weight
    assert default_model.lm_head.weight.data_ptr() == default_model.transformer.wte.weight.data_ptr()


def test_state_dict_has_gpt2_module_names(default_model):
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                "transformer.ln_f.bias", "lm_head.weight"}
    expected |= {f"transformer.h.{layer}.{name}" for layer in range(6) for name in LAYER_PARAMETERS}
    assert set(default_model.state_dict()) == expected


def test_model_computes_gpt2_forward_written_out_by_hand():
    model = randomized(tiny_gpt().double())
    idx = random_tokens(3, TINY_MODEL["block_size"])
    logits, _ = model(idx)
    expected = reference_gpt2_logits(model.state_dict(), idx, TINY_MODEL["n_layer"], TINY_MODEL["n_head"])
    assert (logits - expected).abs().max().item() < 1e-9


def test_causal_self_attention_computes_what_v2s_heads_compute():
    v2 = import_script("v2")
    C, n_head, T = 16, 4, 8
    hs = C // n_head
    torch.manual_seed(0)
    heads = v2.MultiHeadAttention(C, n_head, hs, T, dropout=0.0).eval()
    attn = gpt2.CausalSelfAttention(gpt2.GPTConfig(vocab_size=V, block_size=T, n_embd=C, n_head=n_head,
                                                   dropout=0.0)).eval()
    with torch.no_grad():  # each head's query, key and value rows into c_attn's three thirds; proj into c_proj
        for h, head in enumerate(heads.heads):
            for third, linear in enumerate((head.query, head.key, head.value)):
                attn.c_attn.weight[third * C + h * hs:third * C + (h + 1) * hs] = linear.weight
        attn.c_attn.bias.zero_()
        attn.c_proj.weight.copy_(heads.proj.weight)
        attn.c_proj.bias.copy_(heads.proj.bias)
    x = torch.randn(3, T, C, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(attn(x), heads(x), rtol=0, atol=1e-5)
    assert heads(x).std() > 0.01  # outputs that differ from place to place: the comparison says something


@pytest.mark.parametrize("name, std", [
    ("transformer.wte.weight", 0.02),
    ("transformer.wpe.weight", 0.02),
    ("attn.c_attn.weight", 0.02),
    ("mlp.c_fc.weight", 0.02),
    ("attn.c_proj.weight", 0.02 / math.sqrt(2 * 6)),  # residual projections: 1/sqrt(2 n_layer)
    ("mlp.c_proj.weight", 0.02 / math.sqrt(2 * 6)),
])
def test_weights_start_with_gpt2_std(default_model, name, std):
    weights = [p for key, p in default_model.named_parameters() if key.endswith(name)]
    assert weights
    for p in weights:
        assert p.mean().item() == pytest.approx(0.0, abs=0.05 * std)
        assert p.std().item() == pytest.approx(std, rel=0.05)


def test_biases_start_at_zero(default_model):
    biases = {key: p for key, p in default_model.named_parameters() if key.endswith(".bias")}
    assert len(biases) == 6 * 6 + 1  # four Linear and two LayerNorm biases per layer, and ln_f
    assert all(torch.count_nonzero(p) == 0 for p in biases.values())


def test_layer_norms_start_as_the_identity(default_model):
    norms = [m for m in default_model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 6 + 1
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


# --- optimizer and schedule ---
def test_weight_decay_applies_to_exactly_the_matrices_and_embeddings():
    model = tiny_gpt()
    decay, no_decay = gpt2.configure_optimizer(model, gpt2.HYPERPARAMETERS, fused=False).param_groups
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert {id(p) for p in decay["params"]} == {id(p) for p in model.parameters() if p.dim() >= 2}
    assert decay["weight_decay"] == gpt2.HYPERPARAMETERS["weight_decay"] > 0
    assert no_decay["weight_decay"] == 0


LR_CFG = {**gpt2.HYPERPARAMETERS, "learning_rate": 1e-3, "min_lr": 5e-5, "warmup_iters": 10, "max_iters": 100}


@pytest.mark.parametrize("step, lr", [(0, 1e-4), (9, 1e-3), (100, 5e-5)])
def test_learning_rate_warms_up_then_ends_at_min_lr(step, lr):
    assert gpt2.get_lr(step, LR_CFG) == pytest.approx(lr, rel=1e-12)


def test_learning_rate_rises_during_warmup_then_decreases_to_the_end():
    warmup, end = LR_CFG["warmup_iters"], LR_CFG["max_iters"]
    lrs = [gpt2.get_lr(step, LR_CFG) for step in range(end + 1)]
    assert all(a < b for a, b in pairwise(lrs[:warmup]))
    assert all(a >= b for a, b in pairwise(lrs[warmup - 1:]))
    assert lrs[warmup + 1] < lrs[warmup - 1]


# --- gradient accumulation ---
def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch():
    model = tiny_gpt()
    data = np.array([CHARS.index(c) for c in TEXT])
    x, y = gpt2.get_batch(data, 8, TINY_MODEL["block_size"], torch.Generator().manual_seed(0))

    def gradients(micro_batches):
        model.zero_grad(set_to_none=True)
        loss = gpt2.forward_backward(model, micro_batches, nullcontext(), torch.amp.GradScaler("cpu", enabled=False))
        return loss, [p.grad.clone() for p in model.parameters()]

    split_loss, split = gradients([(1, x[:4], y[:4]), (1, x[4:], y[4:])])
    whole_loss, whole = gradients([(1, x, y)])
    assert split_loss.item() == pytest.approx(whole_loss.item(), abs=1e-6)
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# --- KV cache ---
def test_greedy_tokens_are_the_same_with_and_without_the_kv_cache():
    model = randomized(tiny_gpt().double())
    idx = random_tokens(2, 3)
    new = TINY_MODEL["block_size"] - 3  # the whole sequence fits the window: the cache is exact
    cached = model.generate(idx, new, temperature=0, use_cache=True)
    uncached = model.generate(idx, new, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, 3:].tolist())) > 1  # not one token repeated: the context matters


def test_cached_forward_one_token_at_a_time_matches_the_whole_sequence():
    model = randomized(tiny_gpt(), std=0.1)
    T, prefill = TINY_MODEL["block_size"], 5
    idx = random_tokens(2, T)
    with torch.no_grad():
        expected, _ = model(idx)
        cache = gpt2.KVCache(model.config, 2, "cpu", torch.float32)
        pieces = [model(idx[:, :prefill], cache=cache)[0]]
        pieces += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(prefill, T)]
    assert cache.length == T
    torch.testing.assert_close(torch.cat(pieces, dim=1), expected, rtol=0, atol=1e-5)


# --- token file ---
def test_token_file_is_written_once_reused_and_rebuilt_when_the_text_changes(tmp_path, monkeypatch):
    line = "First Citizen: café — naïve, “quoted”.\n"
    path = tmp_path / "big.txt"
    path.write_text(line * (3_000_000 // len(line)), encoding="utf-8")
    encoded = []
    encode_to_file = gpt2.encode_to_file
    monkeypatch.setattr(gpt2, "encode_to_file", lambda *args: encoded.append(args[0]) or encode_to_file(*args))
    chunk = 1 << 20  # several chunks, so windows across a chunk boundary are checked too

    chars, data = gpt2.load_tokens(str(path), str(tmp_path / "out"), chunk)
    text = path.read_text(encoding="utf-8")
    bin_path, _ = map(Path, gpt2.token_cache_paths(str(path), str(tmp_path / "out")))
    assert bin_path.parent == tmp_path and re.fullmatch(r"big\.txt\.[0-9a-f]{8}\.tokens\.bin", bin_path.name)
    assert chars == "".join(sorted(set(text)))
    assert data.dtype == np.uint8
    assert len(data) == bin_path.stat().st_size == len(text)  # one byte per character
    itos, T = dict(enumerate(chars)), 64
    for start in (0, chunk - T // 2, len(text) // 2 + 7, len(text) - T):  # the second spans a chunk boundary
        assert gpt2.decode(data[start:start + T].tolist(), itos) == text[start:start + T]

    mtime = bin_path.stat().st_mtime_ns
    assert gpt2.load_tokens(str(path), str(tmp_path / "out"), chunk)[0] == chars
    assert len(encoded) == 1
    assert bin_path.stat().st_mtime_ns == mtime

    with open(path, "a", encoding="utf-8") as f:
        f.write("Ωmega\n")
    chars, data = gpt2.load_tokens(str(path), str(tmp_path / "out"), chunk)
    assert len(encoded) == 2
    assert "Ω" in chars
    assert len(data) == len(text) + len("Ωmega\n")
    assert gpt2.decode(data[-6:].tolist(), dict(enumerate(chars))) == "Ωmega\n"


@pytest.mark.parametrize("n_distinct, dtype", [(256, np.uint8), (257, np.uint16)])
def test_token_file_uses_two_bytes_per_character_beyond_256_characters(tmp_path, n_distinct, dtype):
    text = "".join(chr(0x100 + i) for i in range(n_distinct)) * 3
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    chars, data = gpt2.load_tokens(str(path), str(tmp_path / "out"))
    assert data.dtype == dtype
    bin_path = gpt2.token_cache_paths(str(path), str(tmp_path / "out"))[0]
    assert os.path.getsize(bin_path) == len(text) * np.dtype(dtype).itemsize
    assert gpt2.decode(data.tolist(), dict(enumerate(chars))) == text


@pytest.fixture
def encodings(monkeypatch):
    """The texts encode_to_file encodes, as a list that grows with each encoding."""
    encoded = []
    encode_to_file = gpt2.encode_to_file
    monkeypatch.setattr(gpt2, "encode_to_file", lambda *args: encoded.append(args[0]) or encode_to_file(*args))
    return encoded


def test_alternating_a_finetuning_vocabulary_and_the_texts_own_encodes_each_once(tmp_path, text_file, encodings):
    model_vocab = "".join(sorted(set(TEXT) | set("XYZ")))  # a pretrained model's characters: more than the text's
    for _ in range(3):
        own, own_data = gpt2.load_tokens(str(text_file), str(tmp_path / "out"))
        theirs, their_data = gpt2.load_tokens(str(text_file), str(tmp_path / "out"), vocab=model_vocab)
        assert (own, theirs) == ("".join(CHARS), model_vocab)
        assert gpt2.decode(own_data.tolist(), dict(enumerate(own))) == TEXT
        assert gpt2.decode(their_data.tolist(), dict(enumerate(theirs))) == TEXT
    assert len(encodings) == 2  # once per vocabulary
    paths = {gpt2.token_cache_paths(str(text_file), "out", vocab) for vocab in (None, model_vocab)}
    assert len(paths) == 2  # a file each: two runs started together never read each other's ids


def test_a_text_replaced_by_another_of_the_same_size_and_time_is_encoded_again(tmp_path, text_file, encodings):
    gpt2.load_tokens(str(text_file), str(tmp_path / "out"))
    stat = text_file.stat()
    replaced = TEXT.replace("speak", "SPEAK")
    assert len(replaced.encode()) == stat.st_size and set(replaced) != set(TEXT)
    text_file.write_text(replaced, encoding="utf-8")
    os.utime(text_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same size and modification time
    chars, data = gpt2.load_tokens(str(text_file), str(tmp_path / "out"))
    assert len(encodings) == 2
    assert gpt2.decode(data.tolist(), dict(enumerate(chars))) == replaced


def test_a_damaged_id_in_the_token_file_is_caught_and_the_text_encoded_again(tmp_path, text_file, encodings, capsys):
    gpt2.load_tokens(str(text_file), str(tmp_path / "out"))
    bin_path = gpt2.token_cache_paths(str(text_file), str(tmp_path / "out"))[0]
    with open(bin_path, "r+b") as f:
        f.seek(100)
        f.write(bytes([200]))  # an id far beyond the vocabulary's size
    chars, data = gpt2.load_tokens(str(text_file), str(tmp_path / "out"))
    assert len(encodings) == 2
    assert "holds ids outside its vocabulary (a damaged file): encoding" in capsys.readouterr().out
    assert int(data.max()) < len(chars) and gpt2.decode(data.tolist(), dict(enumerate(chars))) == TEXT


# --- checkpoints ---
def test_training_resumes_from_the_checkpoint_step_and_the_model_samples(tmp_path, gpt2_cli):
    code, _, err = gpt2_cli("--max_iters=20")
    assert code == 0, err
    ckpt_path = tmp_path / "out" / "gpt2" / "ckpt.pt"
    saved_step = torch.load(ckpt_path, weights_only=True)["step"]

    code, out, err = gpt2_cli("--resume", "--max_iters=30")
    assert code == 0, err
    assert f"resuming from step {saved_step} " in out
    steps = [int(line.split()[1].rstrip(":")) for line in eval_lines(out)]
    assert steps[0] == saved_step and steps[-1] == 30
    with open(tmp_path / "out" / "gpt2" / "losses.csv") as f:
        logged = [int(row.split(",")[0]) for row in f.read().splitlines()[1:]]
    assert logged == sorted(set(logged)) and logged[-1] == 30  # the resumed steps replace the old rows

    code, out, err = gpt2_cli("--sample", "--prompt=First")
    assert code == 0, err
    assert out.split("\n", 1)[1].startswith("First")


def test_a_checkpoint_without_random_state_resumes(tmp_path, gpt2_cli):
    code, _, err = gpt2_cli("--max_iters=10", "--eval_interval=10")
    assert code == 0, err
    ckpt_path = tmp_path / "out" / "gpt2" / "ckpt.pt"
    checkpoint = torch.load(ckpt_path, weights_only=True)
    del checkpoint["rng_torch"], checkpoint["rng_batches"]  # as gpt2.py's checkpoints had before: it reseeds each step
    torch.save(checkpoint, ckpt_path)
    code, out, err = gpt2_cli("--resume", "--max_iters=20", "--eval_interval=10")
    assert code == 0, err
    assert "resuming from step 10" in out and eval_lines(out)[-1].startswith("step 20:")


class Payload:
    """Not a tensor or a plain Python type: loading it with weights_only=True must fail."""


def test_checkpoint_that_would_run_code_is_refused_with_one_line(tmp_path, gpt2_cli):
    os.makedirs(tmp_path / "out" / "gpt2")
    torch.save({"script": "gpt2", "evil": Payload()}, tmp_path / "out" / "gpt2" / "ckpt.pt")
    code, _, err = gpt2_cli("--sample")
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error:") and "refused" in lines[0]


def test_a_run_of_hours_on_a_cpu_gets_the_laptop_recipe_and_a_short_one_nothing():
    notice = gpt2.laptop_notice("cpu", 9.0, 2000)  # about the default model's step on 2 CPU cores
    assert notice.startswith("on cpu a step takes 9.00 s, so this run needs about 5.0 h.")
    assert notice.endswith(f"python gpt2.py {gpt2.LAPTOP_RECIPE}")
    assert "--time_budget=600" in gpt2.LAPTOP_RECIPE
    assert gpt2.laptop_notice("cpu", 0.1, 5000) is None  # 8 minutes: no notice


def test_a_cpu_run_of_hours_says_so_before_its_first_evaluation(tmp_path, text_file, capsys, monkeypatch):
    monkeypatch.setattr(gpt2.StepTimer, "time_a_step", lambda timer, autocast: 1000.0)  # 20 steps: 5.6 h
    gpt2.main(tiny_args("gpt2", tmp_path, text_file))  # this module's StepTimer, patched
    out = capsys.readouterr().out
    lines = out.splitlines()
    notice = next(i for i, line in enumerate(lines) if line.startswith("on cpu a step takes 1000.00 s"))
    assert notice < lines.index(eval_lines(out)[0])  # before step 0's evaluation, which alone takes minutes
    assert lines[notice].endswith(f"python gpt2.py {gpt2.LAPTOP_RECIPE}")


@pytest.mark.parametrize("dev, budget, said", [("cpu", 0, True), ("mps", 0, True), ("cuda", 0, False),
                                             ("cuda:1", 0, False), ("cpu", 60, False)])
def test_only_a_cpu_or_mps_run_without_a_budget_is_timed_and_told_its_hours(dev, budget, said, capsys, monkeypatch):
    monkeypatch.setattr(gpt2.StepTimer, "time_a_step", lambda timer, autocast: 1000.0)  # no such device here
    run = types.SimpleNamespace(master=True, start_step=0, model=gpt2.build_model(
        {**gpt2.HYPERPARAMETERS, "n_layer": 1, "n_embd": 16, "n_head": 2}, 30))
    monkeypatch.setattr(gpt2, "peak_flops", lambda dev: None)
    timer = gpt2.StepTimer({**gpt2.HYPERPARAMETERS, "time_budget": budget}, dev, run, 1)
    timer.say_if_hours(nullcontext())
    out = capsys.readouterr().out
    assert out.startswith(f"on {dev} a step takes 1000.00 s") if said else out == ""


def test_timing_a_step_leaves_the_model_as_it_was(tmp_path, text_file):
    cfg = {**gpt2.HYPERPARAMETERS, "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4,
           "out_dir": str(tmp_path / "out")}
    torch.manual_seed(0)
    model = gpt2.build_model(cfg, 30)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    run = plumbing.Run(gpt2.SCRIPT, cfg, model, torch.optim.AdamW(model.parameters()), "ab")
    run.bar.close()
    seconds = gpt2.StepTimer(cfg, "cpu", run, 1).time_a_step(nullcontext())
    assert 0 < seconds < 60
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


class StepClock:
    """Stands in for the clock of gpt2.py and plumbing.py: time passes only during training steps, step_seconds(now)
    each."""

    def __init__(self, step_seconds):
        self.now, self.step_seconds = 1000.0, step_seconds

    def time(self):
        return self.now


def run_on_step_clock(step_seconds, budget, tmp_path, text_file, capsys, monkeypatch, *extra, eval_seconds=0.0):
    """A tiny gpt2.py run with --time_budget=budget whose steps take step_seconds(elapsed) on a fake clock, and each
    evaluation eval_seconds (or eval_seconds(elapsed)): (the max_iters it planned first, the steps it made, the
    training time it printed)."""
    clock = StepClock(step_seconds)
    start = clock.now
    forward_backward, estimate_loss = gpt2.forward_backward, gpt2.estimate_loss

    def timed_forward_backward(*args, **kwargs):
        clock.now += clock.step_seconds(clock.now - start)
        return forward_backward(*args, **kwargs)

    def timed_estimate_loss(*args, **kwargs):
        clock.now += eval_seconds(clock.now - start) if callable(eval_seconds) else eval_seconds
        return estimate_loss(*args, **kwargs)
    monkeypatch.setattr(gpt2, "time", clock)  # the step times (StepTimer)
    monkeypatch.setattr(plumbing, "time", clock)  # the run's start and its evaluations (Run's clock): the same clock
    monkeypatch.setattr(gpt2, "forward_backward", timed_forward_backward)
    monkeypatch.setattr(gpt2, "estimate_loss", timed_estimate_loss)
    argv = tiny_args("gpt2", tmp_path, text_file, f"--time_budget={budget}", "--max_iters=1000000",
                     "--eval_interval=50", "--max_new_tokens=0", *extra)
    if "--resume" in extra:  # as a user resumes: the saved settings and the new budget, no --max_iters
        argv = [arg for arg in argv if not arg.startswith("--max_iters=")]
    gpt2.main(argv)
    out = capsys.readouterr().out
    planned = int(re.search(r"time budget: 50 ms a step, so max_iters = (\d+)", out)[1])
    steps = int(eval_lines(out)[-1].split()[1].rstrip(":"))
    took = float(re.search(r"training took ([\d.]+) s", out)[1])
    return planned, steps, took


def test_time_budget_plans_max_iters_from_the_step_time_and_uses_the_budget(tmp_path, text_file, capsys,
                                                                             monkeypatch):
    budget, step = 10, 0.05  # fake seconds; evaluations take no time on the fake clock
    planned, steps, took = run_on_step_clock(lambda elapsed: step, budget, tmp_path, text_file, capsys, monkeypatch)
    assert abs(planned - 0.98 * budget / step) <= 1  # 2% of the budget is kept as a margin
    assert steps == planned
    assert 0.95 * budget <= took <= budget


def test_a_budget_keeps_time_for_the_last_evaluation_only_and_uses_at_least_90_percent(tmp_path, text_file, capsys,
                                                                                     monkeypatch):
    budget, evaluation = 10, 1.0  # evaluations at step 0 and after the last step only, a second each
    planned, steps, took = run_on_step_clock(lambda elapsed: 0.05, budget, tmp_path, text_file, capsys, monkeypatch,
                                             "--eval_interval=1000000", eval_seconds=evaluation)
    assert 0.9 * budget <= took <= budget
    assert steps * 0.05 + 2 * evaluation <= budget


def test_a_budget_holds_when_the_machine_slows_down_after_its_last_evaluation(tmp_path, text_file, capsys,
                                                                             monkeypatch):
    budget = 10  # from a third of the way in, steps and evaluations take twice as long: the last one too

    def step_seconds(elapsed):
        return 0.05 if elapsed < budget / 3 else 0.1
    _, _, took = run_on_step_clock(step_seconds, budget, tmp_path, text_file, capsys, monkeypatch,
                                   "--eval_interval=1000000", eval_seconds=lambda elapsed: 20 * step_seconds(elapsed))
    assert 0.9 * budget <= took <= budget


def test_time_budget_holds_when_the_steps_slow_down_halfway(tmp_path, text_file, capsys, monkeypatch):
    budget = 10
    planned, steps, took = run_on_step_clock(lambda elapsed: 0.05 if elapsed < budget / 2 else 0.15, budget,
                                             tmp_path, text_file, capsys, monkeypatch)
    assert planned * 0.05 > budget / 2  # the first plan, at 50 ms a step, would overrun once the steps slow down
    assert took <= budget
    assert steps < planned  # the plan was cut short
    assert took >= 0.9 * budget  # and the budget was still used


def test_time_budget_holds_when_the_steps_become_25x_slower_a_third_of_the_way_in(tmp_path, text_file, capsys,
                                                                                   monkeypatch):
    budget = 10  # another program takes the cores: a step of 50 ms becomes 1.25 s
    _, _, took = run_on_step_clock(lambda elapsed: 0.05 if elapsed < budget / 3 else 1.25, budget, tmp_path,
                                   text_file, capsys, monkeypatch)
    assert 0.95 * budget <= took <= 1.05 * budget


def test_a_single_slow_step_does_not_end_a_budgeted_run_early(tmp_path, text_file, capsys, monkeypatch):
    budget, slow = 10, []

    def step_seconds(elapsed):
        if elapsed >= 7 and not slow:  # once, near the end: a step of 2 s, then 50 ms again
            slow.append(elapsed)
            return 2.0
        return 0.05
    _, _, took = run_on_step_clock(step_seconds, budget, tmp_path, text_file, capsys, monkeypatch)
    assert slow
    assert 0.95 * budget <= took <= budget


def test_a_new_time_budget_at_resume_trains_that_many_more_seconds(tmp_path, text_file, capsys, monkeypatch):
    budget = 5
    _, steps, took = run_on_step_clock(lambda elapsed: 0.05, budget, tmp_path, text_file, capsys, monkeypatch)
    assert 0.95 * budget <= took <= budget
    saved = torch.load(tmp_path / "out" / "gpt2" / "ckpt.pt", weights_only=True)["step"]
    assert saved == steps  # the run reached its planned end, and saved it
    _, more_steps, took = run_on_step_clock(lambda elapsed: 0.05, budget, tmp_path, text_file, capsys, monkeypatch,
                                            "--resume")
    assert 0.95 * budget <= took <= budget  # 5 more seconds of training
    assert more_steps - saved == pytest.approx(steps, abs=3)  # as many steps again


def test_resuming_without_a_time_budget_keeps_the_planned_end():
    planned = 57  # the max_iters a run with --time_budget=3 planned: its checkpoint's settings say so
    cfg = gpt2.budget_at_resume({**gpt2.HYPERPARAMETERS, "max_iters": planned, "time_budget": 3}, {"resume": True},
                                planned)
    assert (cfg["max_iters"], cfg["time_budget"]) == (planned, 0)


# --- any seed ---
@pytest.mark.parametrize("seed", [2**63 - 1, -2**63])  # the ends of the range; step_seed's own test takes others
def test_every_64_bit_seed_trains_and_samples(seed, gpt2_cli):
    code, out, err = gpt2_cli(f"--seed={seed}")
    assert code == 0, err
    assert [line.split(":")[0] for line in eval_lines(out)] == ["step 0", "step 10", "step 20"]
    code, out, err = gpt2_cli(f"--seed={seed}", "--sample", "--max_new_tokens=5")
    assert code == 0, err
    assert len(out.removeprefix("using device: cpu\n")) == 1 + 5 + 1  # a newline, 5 characters, print's newline


def test_step_seeds_stay_in_the_range_torch_accepts():
    for seed in (0, 20261129, -1, 2**63 - 1, -2**63):
        for step, micro in ((0, 0), (1999, 7), (10**9, 3)):
            assert 0 <= gpt2.step_seed(seed, step, micro) < 2**64
    assert gpt2.step_seed(1337, 5, 1) == (1337 * 1_000_003 + 5) * 1_000_003 + 1  # small seeds: the plain formula
    assert len({gpt2.step_seed(-2**63, step, 0) for step in range(100)}) == 100  # still one seed per step


def test_a_run_with_the_largest_seed_resumes_exactly(tmp_path, text_file, capsys, monkeypatch):
    argv = [f"--seed={2**63 - 1}", "--dropout=0.1"]
    whole = tiny_args("gpt2", tmp_path / "whole", text_file, *argv)
    resumed = tiny_args("gpt2", tmp_path / "resumed", text_file, *argv)
    code, uninterrupted, err = run_in_process("gpt2", whole, capsys, monkeypatch)
    assert code == 0, err
    micro_batches = gpt2.micro_batches

    def ctrl_c_at_step_13(data, cfg, step, *args):
        if step == 13:
            raise KeyboardInterrupt
        return micro_batches(data, cfg, step, *args)
    monkeypatch.setattr(gpt2, "micro_batches", ctrl_c_at_step_13)
    with pytest.raises(SystemExit) as stopped:
        gpt2.main(resumed)
    assert stopped.value.code == 130
    capsys.readouterr()
    monkeypatch.setattr(gpt2, "micro_batches", micro_batches)
    code, out, err = run_in_process("gpt2", [*resumed, "--resume"], capsys, monkeypatch)
    assert code == 0, err
    assert "resuming from step 10" in out
    assert eval_lines(out) == eval_lines(uninterrupted)[1:]
    models = [torch.load(tmp_path / name / "out" / "gpt2" / "ckpt.pt", weights_only=True)["model"]
              for name in ("whole", "resumed")]
    for name, tensor in models[0].items():
        torch.testing.assert_close(models[1][name], tensor, rtol=0, atol=0, msg=name)
