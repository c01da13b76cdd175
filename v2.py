"""Lesson 2: a transformer that reads the context (the video's final model, at its small size).

Adds to bigram.py: position embeddings, masked self-attention in several heads, a feed-forward layer,
residual connections and LayerNorm, stacked n_layer times.
Run:    python v2.py                              (train; the best model is kept in out/v2/)
        python v2.py --sample --prompt="ROMEO:"   (generate from the saved model)    python v2.py --help
Result: val loss 4.40 -> 1.8094 in 5000 steps, 92 s on 2 CPU cores, 2.1x faster than the video's code (2026-11-26).
"""

import errno
import hashlib
import io
import math
import os
import pickle
import sys
import time
import urllib.request

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F
from tqdm import tqdm

# hyperparameters
batch_size = 16  # sequences per forward pass during training (B)
block_size = 32  # max context length in characters (T)
max_iters = 5000  # training steps (optimizer updates)
eval_interval = 500  # steps between evaluations of the train and val loss
learning_rate = 1e-3  # AdamW step size
n_embd = 64  # width of the token representation (C)
n_head = 4  # attention heads per layer (nh); head_size = n_embd // n_head
n_layer = 4  # transformer blocks
dropout = 0.0  # probability of zeroing an activation during training
# evaluation
eval_train_windows = 1000  # train windows scored at each evaluation (val scores its whole split)
eval_batch_size = 100  # windows per forward pass during evaluation
# sampling
prompt = ""  # text the sample continues (empty: start from a newline); \n in it is a newline, \\ a backslash
max_new_tokens = 500  # characters to generate
temperature = 1.0  # sampling temperature: <1 sharper, >1 flatter, 0 always the likeliest character
top_k = 0  # sample only among the k likeliest characters (0: all of them)
sample_file = ""  # also write the sample, as UTF-8, into this file (empty: print it only)
attention_png = ""  # with --sample: also draw the prompt's attention weights, each layer and head, into this PNG
# what to run, on what, and where
sample = False  # --sample: generate from the saved model instead of training
resume = False  # --resume: continue training from the checkpoint in out_dir
input_file = "input.txt"  # training text (any UTF-8 file); tiny Shakespeare is downloaded if missing
out_dir = "out/v2"  # where the best model and the loss log are written
device = ""  # cuda, mps or cpu; empty picks cuda, then mps, then cpu
seed = 1337  # random seed for the weights, the batches and sampling
log_interval = 10  # steps between updates of the loss on the progress bar
# every name above is a hyperparameter: `python v2.py --name=value` overrides it, --help lists them
HYPERPARAMETERS = {k: v for k, v in globals().items() if type(v) in (bool, int, float, str) and not k.startswith("_")}


# the data ("reading and exploring the data", "tokenization, train/val split")
def load_data(input_file, block_size):
    """The vocabulary (chars, stoi, itos) and the encoded text, split into train and val data."""
    text = read_text(input_file)  # tiny Shakespeare by default; the checks on the file are below the ruler
    chars = sorted(set(text))  # every character that occurs in the text
    vocab_size = len(chars)
    check_text(input_file, len(text), vocab_size, block_size)
    stoi = {ch: i for i, ch in enumerate(chars)}  # string to integer
    itos = {i: ch for i, ch in enumerate(chars)}  # integer to string
    data = np.array(encode(text, stoi), dtype=np.int64)  # the whole text as token ids
    n = int(0.9 * len(data))  # the first 90% trains, the rest validates
    return chars, stoi, itos, data[:n], data[n:]


# --- same in every script: tokenizer ---
def encode(s, stoi):
    """String -> list of integers, one per character ("tokenization" in the video)."""
    unknown = sorted(set(s) - stoi.keys())
    if unknown:
        raise UserError(f"characters not in the model's vocabulary: {''.join(unknown)!r}; use only characters "
                        "that occur in the training text")
    return [stoi[c] for c in s]


def decode(ids, itos):
    """List of integers -> string."""
    return "".join(itos[i] for i in ids)
# --- end ---


# --- same in every script: batches ---
def get_batch(data, batch_size, block_size, generator):
    """batch_size random chunks of the data ("data loader: batches of chunks of data"): inputs x (B, T), and
    targets y, the same chunks one character on."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()
    return get_windows(data, starts, block_size)


def get_windows(data, starts, block_size):
    """The inputs x and targets y of the windows at the given start offsets."""
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in starts])  # (B, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in starts])  # (B, T)
    return x, y
# --- end ---


# --- same in every script: evaluation ---
@torch.no_grad()
def estimate_loss(model, eval_sets, batch_size):
    """Mean loss over every window of each eval set, in eval mode (no dropout). differs from the video: it
    averages 200 random batches per split, a noisy estimate; this scores every val window (and a fixed sample
    of train windows), so the number is exact and two evaluations of the same model agree."""
    model.eval()
    out = {}
    for split, (x, y) in eval_sets.items():
        total = 0.0
        for i in range(0, len(x), batch_size):
            _, loss = model(x[i:i + batch_size], y[i:i + batch_size])
            total += loss.item() * len(x[i:i + batch_size])
        out[split] = total / len(x)
    model.train()
    return out
# --- end ---


# the model: self-attention ("THE CRUX OF THE VIDEO: version 4: self-attention"), then the Transformer around it
# B=batch, T=time, C=n_embd, nh=n_head, hs=head_size, V=vocab_size
class Head(nn.Module):
    """One head of self-attention: each position emits a query, a key and a value of head_size numbers."""

    def __init__(self, n_embd, head_size, block_size, dropout):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))  # a buffer, not a parameter
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape  # (B, T, C)
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        # affinities, scaled by 1/sqrt(head_size): "scaled" self-attention, with the video's fix (head_size, not C)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # (B, T, T): the future cannot communicate
        wei = F.softmax(wei, dim=-1)  # (B, T, T): each row sums to 1
        wei = self.dropout(wei)  # (B, T, T)
        v = self.value(x)  # (B, T, hs)
        out = wei @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)
        return out


class MultiHeadAttention(nn.Module):
    """Several heads of self-attention in parallel ("multi-headed self-attention"), then a projection."""

    def __init__(self, n_embd, n_head, head_size, block_size, dropout):
        super().__init__()
        self.heads = nn.ModuleList([Head(n_embd, head_size, block_size, dropout) for _ in range(n_head)])
        self.proj = nn.Linear(head_size * n_head, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)  # (B, T, nh * hs) = (B, T, C)
        out = self.dropout(self.proj(out))  # (B, T, C)
        return out


class FeedForward(nn.Module):
    """A linear layer to 4x width, a ReLU, and back ("feedforward layers of transformer block")."""

    def __init__(self, n_embd, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)  # (B, T, C)


class Block(nn.Module):
    """Transformer block: communication (attention), then computation (feed-forward)."""

    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        head_size = n_embd // n_head
        self.sa = MultiHeadAttention(n_embd, n_head, head_size, block_size, dropout)
        self.ffwd = FeedForward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))  # (B, T, C): "residual connections", with "layernorm" before each part
        x = x + self.ffwd(self.ln2(x))  # (B, T, C)
        return x


class GPTLanguageModel(nn.Module):
    """Token and position embeddings ("positional encoding"), n_layer blocks, a final LayerNorm, the linear head."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout):
        super().__init__()
        self.block_size = block_size
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)  # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape  # (B, T)
        tok_emb = self.token_embedding_table(idx)  # (B, T, C)
        pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))  # (T, C)
        x = tok_emb + pos_emb  # (B, T, C)
        x = self.blocks(x)  # (B, T, C)
        x = self.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))  # mean over the B*T positions
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=0, generator=None):
        """Append max_new_tokens sampled tokens to idx (B, T), one at a time, each fed back as input."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.block_size:]  # (B, <=block_size): the positions the model has embeddings for
            logits, _ = self(idx_cond)  # (B, T, V)
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx


def build_model(cfg, vocab_size):
    return GPTLanguageModel(vocab_size, cfg["block_size"], cfg["n_embd"], cfg["n_head"], cfg["n_layer"],
                            cfg["dropout"])


# the training loop
def train(cfg, dev, checkpoint=None):
    """The video's script: the data, the model, AdamW and the training loop; then a sample from the model."""
    chars, stoi, itos, train_data, val_data = load_data(cfg["input_file"], cfg["block_size"])
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, len(chars)).to(dev)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    fused = dev in ("cuda", "cpu")  # differs from the video: one kernel updates every parameter at once
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], fused=fused)
    run = Run(cfg, dev, model, optimizer, chars, train_data, val_data, checkpoint)  # resume, save, log, progress
    with run:
        for step in range(run.start_step, cfg["max_iters"] + 1):
            # every once in a while (and after the last step) evaluate the loss on train and val
            if step % cfg["eval_interval"] == 0 or step == cfg["max_iters"]:
                losses = estimate_loss(model, run.eval_sets, cfg["eval_batch_size"])
                run.evaluated(step, losses)  # print and log the losses; save the model if it is the best so far
            if step == cfg["max_iters"]:
                break
            xb, yb = get_batch(train_data, cfg["batch_size"], cfg["block_size"], run.batch_generator)
            logits, loss = model(xb.to(dev), yb.to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.stepped(step, loss)  # the progress bar
    run.finished()  # how long it took, and the plot of the losses
    show_sample(generate_text(model, cfg, stoi, itos, dev), cfg)  # print it (and save it)


# generation: continue a prompt, one sampled character at a time
def generate_text(model, cfg, stoi, itos, dev):
    generator = torch.Generator(sampling_device(dev)).manual_seed(cfg["seed"])
    context = torch.tensor([prompt_ids(cfg["prompt"], stoi)], dtype=torch.long, device=dev)  # (1, T)
    model.eval()
    out = model.generate(context, cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], generator)  # (1, T+new)
    return decode(out[0].tolist(), itos)


# --- same in every script: sampling ---
def sample_next(logits, temperature, top_k, generator):
    """The next token id from the last position's logits (B, V) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1): the likeliest token
    logits = logits - logits.amax(dim=-1, keepdim=True)  # (B, V): the likeliest at 0, the softmax unchanged
    logits = torch.where(logits < 0, logits / temperature, 0.0)  # (B, V): never 0/0, even for a tiny temperature
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k): top_k is clamped to the vocabulary
        logits[logits < v[:, [-1]]] = -float("inf")  # (B, V)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    probs = probs.to(sampling_device(probs.device))  # (B, V): on MPS the draw is made on the CPU (see sampling_device)
    idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
    return idx_next.to(logits.device)  # (B, 1): on the model's device
# --- end ---


# ---- plumbing: not in the video (command line, checks, files, checkpoints) ----
SCRIPT = "v2"
MODEL_KEYS = ("block_size", "n_embd", "n_head", "n_layer")  # the settings a checkpoint's model is built from


def main(argv):
    overrides = parse_command_line(argv, HYPERPARAMETERS)
    cfg = {**HYPERPARAMETERS, **overrides}
    check_combinations(cfg, overrides)
    checkpoint = None
    if cfg["sample"] or cfg["resume"]:  # the saved model's settings: see saved_settings
        checkpoint = load_checkpoint(cfg["out_dir"], SCRIPT, cfg)
        cfg = saved_settings(cfg, overrides, checkpoint)
    check_config(cfg)
    dev = pick_device(cfg["device"])
    check_memory(cfg, dev)
    print(f"using device: {dev}")
    if cfg["sample"]:
        if cfg["attention_png"]:
            check_attention_png()
        model = sample_from_checkpoint(cfg, dev, checkpoint)
        if cfg["attention_png"]:
            draw_attention(model, cfg, checkpoint["chars"], dev)
    else:
        make_folder(cfg["out_dir"], "out_dir")
        train(cfg, dev, checkpoint)


def read_text(path):
    """The whole input file as one string (lessons 1 and 2 hold the text in memory)."""
    check_input_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise UserError(f"input file {path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                        "convert it to UTF-8 first") from None


def attention_weights(model, idx):
    """The attention weights wei (n_layer, n_head, T, T) of one sequence idx (1, T): each Head's softmax output,
    caught on its way into the Head's dropout (which is off in eval mode), so they are what the model computes."""
    weights = []
    hooks = [head.dropout.register_forward_hook(lambda module, inputs, output: weights.append(inputs[0][0]))
             for block in model.blocks for head in block.sa.heads]
    try:
        model.eval()
        with torch.no_grad():
            model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    n_layer, n_head = len(model.blocks), len(model.blocks[0].sa.heads)
    return torch.stack(weights).view(n_layer, n_head, *weights[0].shape)


# --- same in v2.py and gpt2.py: attention picture ---
def check_attention_png():
    """--attention_png, before any work: matplotlib imports (check_output_paths has checked the path)."""
    try:
        import_pyplot()
    except UserError as error:
        raise UserError(f"--attention_png needs matplotlib: {error}") from None


def draw_attention(model, cfg, chars, dev):
    """--attention_png: the prompt's attention weights, one heatmap per layer and head, in a PNG.

    Row t of a heatmap is what position t of the prompt takes from each position up to t: its weights
    sum to 1, and the masked future (above the diagonal) is left empty.
    """
    start = time.time()
    ids = prompt_ids(cfg["prompt"], {ch: i for i, ch in enumerate(chars)})
    if len(ids) > cfg["block_size"]:
        print(f"the prompt is longer than block_size ({len(ids)} > {cfg['block_size']} characters): "
              f"the picture shows its last {cfg['block_size']}")
        ids = ids[-cfg["block_size"]:]
    weights = attention_weights(model, torch.tensor([ids], device=dev)).float().cpu()  # (n_layer, nh, T, T)
    n_layer, n_head, T, _ = weights.shape
    weights = weights.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("nan"))  # empty, not 0
    labels = [{"\n": "⏎", " ": "␣"}.get(chars[i], chars[i]) for i in ids]
    plt = import_pyplot()
    side = max(2.0, 0.12 * T + 0.8)  # inches per heatmap: room for one readable character per row and column
    width, height = n_head * side, n_layer * side + 0.6
    fig, axes = plt.subplots(n_layer, n_head, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.1 / width, bottom=0.7 / height, top=1 - 0.8 / height,
                        wspace=0.2, hspace=0.3)  # fixed margins in inches: a layout engine doubles the drawing time
    for layer, row in enumerate(axes):
        for head, ax in enumerate(row):
            ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(range(T), labels, fontsize=6)
            ax.set_yticks(range(T), labels, fontsize=6)
            ax.tick_params(length=0)
    for ax in axes[-1]:
        ax.set_xlabel("key: the position attended to", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("query: the position attending", fontsize=8)
    fig.suptitle(f"{SCRIPT}.py attention weights on {''.join(chars[i] for i in ids)!r}: row t = what position t "
                 "takes from each position up to t", fontsize=10, y=1 - 0.2 / height)
    make_folder(os.path.dirname(cfg["attention_png"]) or ".", "attention_png")
    save_figure(fig, cfg["attention_png"])
    print(f"attention weights of {T} characters ({n_layer} layers x {n_head} heads) in {cfg['attention_png']} "
          f"({time.time() - start:.1f} s)")
# --- end ---


# --- same in every script: command line ---
class UserError(Exception):
    """A mistake the user can fix: printed as one line, without a traceback."""


# The valid values of every hyperparameter (a script skips the names it lacks): --help prints them and check_config
# enforces them before any work. [a, b] includes its ends, (a, b) excludes them, so no float setting can be nan or
# inf; a bound may name another setting, and "and" adds a condition. A tuple lists the choices; None: any value of
# the setting's type (paths are checked by check_output_paths).
VALID = {
    "batch_size": "[1, inf)", "block_size": "[1, inf)", "max_iters": "[1, inf)", "eval_interval": "[1, inf)",
    "learning_rate": "(0, inf)", "n_embd": "[1, inf)", "n_head": "[1, inf) and n_embd % n_head == 0",
    "n_layer": "[1, inf)", "dropout": "[0, 1)",
    "min_lr": "[0, learning_rate]", "warmup_iters": "[0, inf)", "weight_decay": "[0, inf)", "beta1": "[0, 1)",
    "beta2": "[0, 1)", "grad_clip": "[0, inf)", "grad_accum_steps": "[1, inf)", "time_budget": "[0, inf)",
    "compile": None, "dtype": ("auto", "bfloat16", "float16", "float32"),
    "eval_train_windows": "[1, inf)", "max_val_windows": "[1, inf)", "eval_batch_size": "[1, inf)",
    "prompt": None, "max_new_tokens": "[0, inf)", "temperature": "[0, inf)", "top_k": "[0, inf)",
    "attention_png": None, "kv_cache": None, "sample_file": None,
    "sample": None, "resume": None, "init_from": None, "input_file": None, "out_dir": None,
    "device": ("cuda", "mps", "cpu", ""), "seed": "[-2**63, 2**63 - 1]", "log_interval": "[1, inf)",
}


def parse_command_line(argv, defaults):
    """['--name=value', '--flag', ...] -> {name: value}, each of its default's type; --help or -h lists them."""
    if "--help" in argv or "-h" in argv:
        print_help(defaults)
        sys.exit(0)
    valid = ", ".join(f"--{name}" for name in defaults)
    overrides = {}
    for arg in argv:
        name, has_value, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or name not in defaults:
            raise UserError(f"unknown option {arg!r}; valid options (as --name=value, or --help): {valid}")
        kind = type(defaults[name])
        if kind is bool:
            value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower() if has_value else "true")
        else:
            try:
                value = kind(text)
            except ValueError:
                value = None
        if value is None or not has_value and kind is not bool:
            raise UserError(f"--{name} needs a value of type {kind.__name__}, got {text!r}; valid options: {valid}")
        overrides[name] = value
    return overrides


def print_help(defaults):
    """Every hyperparameter with its default, its comment and its valid values, read from this file's
    hyperparameter block and VALID."""
    with open(__file__, encoding="utf-8") as f:
        block = f.read().split("\n# hyperparameters\n", 1)[1].split("\n# every name above", 1)[0]
    print(f"usage: python {SCRIPT}.py [--name=value ...]\n\n{__doc__.strip()}\n\nhyperparameters:")
    for line in block.splitlines():
        name, is_setting, rest = line.partition(" = ")
        if is_setting:
            value, _, comment = rest.partition("  # ")  # the default as the file writes it: 1e-3, "out/v2", ""
            value = value.strip('"') if isinstance(defaults[name], str) and defaults[name] else value
            valid = f"; valid: {describe_valid(VALID[name])}" if VALID[name] is not None else ""
            print(f"  --{name}={value}".ljust(28) + f" {comment}{valid}")
        else:
            print(f"{line.removeprefix('# ')}:")


def describe_valid(rule):
    """A VALID entry as --help and the errors write it."""
    return rule if isinstance(rule, str) else ", ".join(choice or '""' for choice in rule)


def check_config(cfg):
    """Reject hyperparameter values that cannot train, before any work starts: each one against VALID, then
    the paths the run will write."""
    for name, rule in VALID.items():
        if name in cfg and rule is not None and not is_valid(cfg[name], rule, cfg):
            if not isinstance(rule, str):
                raise UserError(f"--{name} must be one of {describe_valid(rule)}, got {cfg[name]!r}")
            named = ", ".join(f"{other}={cfg[other]}" for other in cfg if other != name and other in rule)
            raise UserError(f"--{name}={cfg[name]} is out of range: {name} must be in {rule}"
                            + (f" ({named})" if named else ""))
    if cfg.get("attention_png") and not cfg["sample"]:
        raise UserError("--attention_png draws the attention of a saved model: add --sample (and a --prompt)")
    check_output_paths(cfg)


def is_valid(value, rule, cfg):
    """Whether value meets its VALID rule: one of the choices, or inside the interval (and the condition)."""
    if not isinstance(rule, str):
        return value in rule
    interval, _, condition = rule.partition(" and ")
    names = {**cfg, "inf": math.inf}
    low, high = (eval(bound, {"__builtins__": {}}, names) for bound in interval[1:-1].split(", "))
    inside = (low <= value if interval[0] == "[" else low < value) and (
        value <= high if interval[-1] == "]" else value < high)
    return inside and (not condition or eval(condition, {"__builtins__": {}}, names))


def check_combinations(cfg, overrides):
    """Settings that mean nothing together: one line, before any work."""
    if cfg["sample"] and cfg["resume"]:
        raise UserError("--sample and --resume do not go together: --sample generates from the saved model, "
                        "--resume trains it further; run one, then the other")
    if cfg["sample"] and "time_budget" in overrides:
        raise UserError("--time_budget plans a training run and --sample does not train; leave --time_budget out")


def check_output_paths(cfg):
    """Every path the run will write, before any work and creating nothing: out_dir (a training run's folder),
    attention_png and sample_file (files)."""
    if not cfg["sample"]:
        check_output_path(cfg["out_dir"], "out_dir", folder=True)
    for option in ("attention_png", "sample_file"):
        if cfg.get(option):
            check_output_path(cfg[option], option)


def check_output_path(path, option, folder=False):
    """--option=path can be written: a file path does not end in a separator or name a folder, a folder path does
    not name a file, and the nearest existing folder above it is a folder this user can write in."""
    if not folder and (path.endswith(("/", os.sep)) or os.path.isdir(path)):
        raise UserError(f"cannot write {path}: it names a folder, not a file; choose another --{option}, "
                        "a file name")
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--{option}={path} is a file, not a folder; choose another --{option}")
    above = os.path.abspath(path if folder else os.path.dirname(path) or ".")
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)  # the folders below it are made when the run writes
    if not os.path.isdir(above):
        raise UserError(f"cannot write {path}: {above} is a file, not a folder (a part of the path is a file); "
                        f"choose another --{option}")
    if not os.access(above, os.W_OK):
        raise UserError(f"cannot write in {above}: permission denied; choose a folder you can write to (--{option})")
# --- end ---


# --- same in every script: device ---
def pick_device(requested):
    """'' -> cuda if available, else mps, else cpu. An unavailable device asked for by name is an error."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if requested == "":
        return next(name for name, ok in available.items() if ok)
    if requested not in available:
        raise UserError(f"--device must be cuda, mps or cpu (or left out to pick one), got {requested!r}")
    if not available[requested]:
        raise UserError(f"--device={requested} was asked for but this machine has no {requested}; "
                        "use --device=cpu or leave --device out to pick the best one available")
    return requested


def sampling_device(device):
    """Where torch.multinomial draws the next token: on the CPU for MPS, whose multinomial has had bugs that give
    a token of probability 0, e.g. one top_k has excluded (PyTorch issues 192577, 136623), or crash (178579)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def memory_ran_out(error):
    """'CUDA', 'MPS' or 'the CPU' when the error is that device running out of memory, else None. The CPU's
    allocator raises a RuntimeError ("can't allocate memory" on Linux and macOS, "not enough memory" on Windows)."""
    cpu = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")
    if isinstance(error, MemoryError) or isinstance(error, RuntimeError) and any(text in str(error) for text in cpu):
        return "the CPU"
    return out_of_memory(error)


def check_memory(cfg, dev):
    """Refuse, before any work, a model that cannot fit the device: its weights (and, to train, their gradients
    and AdamW's two moments), float32. Counted on the meta device, which holds shapes and no numbers."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(cfg, 256).parameters())  # 256: more than a text's characters
    need, have = 4 * n_params * (1 if cfg["sample"] else 4), device_memory(dev)
    if have and need > have:
        raise UserError(f"a model of {n_params / 1e6:,.0f}M parameters needs about {need / 2**30:,.0f} GiB to "
                        f"{'sample' if cfg['sample'] else 'train'}, and {dev} has {have / 2**30:,.0f} GiB; "
                        "choose a smaller model (--n_embd, --n_layer)")


def device_memory(dev):
    """The device's memory in bytes, where torch or the system says it (else None: nothing is checked)."""
    kind = torch.device(dev).type
    if kind == "cuda":
        return torch.cuda.get_device_properties(dev).total_memory
    if kind == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return torch.mps.recommended_max_memory()
    try:  # the CPU: the machine's physical memory (POSIX; Windows has no sysconf)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
# --- end ---


# --- same in every script: files ---
WRITE_PROBLEMS = {  # by errno name, so that a code this platform lacks is simply never matched
    "ENOSPC": "no space left on the disk; free some space and run again",
    "EDQUOT": "the disk quota is used up; free some space and run again",
    "EACCES": "permission denied; choose a folder you can write to",
    "EPERM": "permission denied; choose a folder you can write to",
    "EROFS": "the file system is read-only; choose a folder you can write to",
    "ENOTDIR": "a part of the path is a file, not a folder; choose another path",
    "EISDIR": "a folder is in the way; choose another path",
    "ENOENT": "its folder does not exist; choose another path",
}
HELD = "another program, e.g. a spreadsheet or an image viewer, has it open"
REPLACE_WAITS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.25)  # seconds between tries to replace a file that is held open


class FileHeld(UserError):
    """The new content is written next to path, but path cannot be replaced: on Windows, a file another program
    has open cannot be renamed over (PermissionError, winerror 32 or 5)."""


def write_problem(path, error):
    """One line for a failed write: what happened to which path, and what to do."""
    problem = WRITE_PROBLEMS.get(errno.errorcode.get(error.errno, ""), error.strerror or str(error))
    return f"cannot write {path}: {problem}"


def write_file(path, chunks):
    """Write chunks of bytes to path atomically: a temp file, flushed to disk, then renamed over path.

    A kill at any moment leaves the previous file whole; a failed write (a full disk, no permission)
    removes the temp file and raises UserError, so no half-written file is ever left behind. A file held open
    by another program is tried again for about a second, then FileHeld: the folder is writable (the temp file
    beside it was written), so it is the file itself that is in use.
    """
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        for wait in (*REPLACE_WAITS, None):
            try:
                os.replace(tmp, path)
                break
            except PermissionError:
                if wait is None:
                    raise FileHeld(f"cannot replace {path}: {HELD}") from None
                time.sleep(wait)
    except BaseException as error:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise UserError(write_problem(path, error)) from None
        raise


def make_folder(path, option):
    """Create the folder given by --option (and its parents), and check that files can be written in it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--{option}={path} is a file, not a folder; choose another --{option}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(write_problem(path, error) + f" (--{option})") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"cannot write in {path}: permission denied; choose a folder you can write to (--{option})")
# --- end ---


# --- same in every script: input text ---
DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DATA_SIZE = 1115394  # bytes of tiny Shakespeare
DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def download_tiny_shakespeare(path):
    """Fetch tiny Shakespeare to path, check its size and hash, and write it atomically."""
    print(f"{path} not found: downloading tiny Shakespeare")
    try:
        with urllib.request.urlopen(DATA_URL, timeout=30) as response:
            content = response.read()
    except OSError as error:
        raise UserError(f"{path} is missing and the download failed ({error}); place any UTF-8 text file "
                        f"at {path} or pass --input_file=PATH") from None
    if len(content) != DATA_SIZE or hashlib.sha256(content).hexdigest() != DATA_SHA256:
        raise UserError(f"the downloaded file is not tiny Shakespeare; place any UTF-8 text file at {path} "
                        "or pass --input_file=PATH")
    write_file(path, [content])


def check_input_file(path):
    """Make sure path is a readable file, downloading tiny Shakespeare for the default input.txt."""
    folder = os.path.dirname(path) or "."
    if not os.path.exists(path) and not os.path.isdir(folder):
        raise UserError(f"input file {path} does not exist: {folder} is not a folder; "
                        "pass --input_file=PATH to a UTF-8 text file")
    if not os.path.exists(path) and os.path.basename(path) == "input.txt":
        download_tiny_shakespeare(path)
    if not os.path.exists(path):
        raise UserError(f"input file {path} does not exist; pass --input_file=PATH to a UTF-8 text file")
    if os.path.isdir(path):
        raise UserError(f"input file {path} is a directory; pass --input_file=PATH to a UTF-8 text file")
    if not os.path.isfile(path):
        raise UserError(f"input file {path} is not a regular file (a device or a pipe); "
                        "pass --input_file=PATH to a UTF-8 text file")
    if not os.access(path, os.R_OK):
        raise UserError(f"input file {path} cannot be read (permission denied); check its permissions")


def check_text(path, n_chars, n_distinct, block_size):
    """A text must be long enough for one window in its val split, and have two distinct characters."""
    if n_chars == 0:
        raise UserError(f"input file {path} is empty; pass --input_file=PATH to a text with some content")
    if n_distinct < 2:
        raise UserError(f"input file {path} uses a single distinct character; there is nothing to learn")
    n_val = n_chars - int(0.9 * n_chars)
    if n_val < block_size + 1:
        raise UserError(f"the val split of {path} (last 10%, {n_val} characters) is shorter than block_size + 1 "
                        f"= {block_size + 1}; use a longer text or a smaller --block_size")
# --- end ---


# --- same in every script: checkpoints ---
SAMPLE_KEYS = {"config": dict, "chars": str, "model": dict}  # what a checkpoint needs to be sampled
RESUME_KEYS = {"optimizer": dict, "step": int, "best_val_loss": float}  # and to be resumed
FIXES = {  # for a saved model whose shape differs from the command line's, by what the user asked for
    "sample": "leave --{name} out to sample the saved model (its shape is read from the checkpoint)",
    "resume": "leave --{name} out to resume the saved model; a model of another shape is a new run, with another "
              "--out_dir",
    "init_from": "leave --{name} out: a finetuned model has the shape of the model it starts from",
}


def command(cfg, *options):
    """The command that runs this script with options in this run's folders (--out_dir and --input_file, where they
    are not the defaults), quoted to paste into a shell; under torchrun, a torchrun command with as many processes."""
    options += tuple(f"--{name}={cfg[name]}" for name in ("out_dir", "input_file")
                     if name in cfg and cfg[name] != HYPERPARAMETERS[name])
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == f"{SCRIPT}.py" else f"{SCRIPT}.py"  # as it was typed
    launcher = ["python"]
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        processes = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
        launcher = ["torchrun", "--standalone", f"--nproc_per_node={processes}"]
    words = [*launcher, script, *options]
    import shlex  # only printed commands need these two
    import subprocess
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)  # cmd and PowerShell; sh


def save_checkpoint(checkpoint, path):
    """torch.save into memory, then write_file: a kill or a full disk never leaves half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_file(path, [buffer.getvalue()])


def load_checkpoint(folder, script, cfg=None, option="out_dir"):
    """The checkpoint in folder (given as --option), loaded with weights_only=True: tensors and plain Python types,
    never code. cfg: the settings whose folders the printed commands carry."""
    path = os.path.join(folder, "ckpt.pt")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--{option}={folder} is a file, not a folder; pass the folder of a training run")
    if not os.path.exists(path):
        hint = command({**(cfg or {}), "out_dir": folder} if option == "out_dir" else {"out_dir": folder})
        raise UserError(f"no saved model at {path}" + (f" (--{option})" if option != "out_dir" else "")
                        + f"; train one first with: {hint}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "Unsupported class" in str(error):  # refused by weights_only
            raise UserError(f"{path} was refused: loading it would run code (it is not a plain checkpoint); "
                            "only load checkpoints written by this script") from None
        raise UserError(f"{path} is not a readable checkpoint (not a file torch.save wrote); "
                        "delete it and train again") from None
    except Exception as error:
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: {type(error).__name__}); "
                        "delete it and train again") from None
    check_owner(checkpoint, path, script)
    check_keys(checkpoint, path, SAMPLE_KEYS, "delete it and train again")
    missing = [name for name in MODEL_KEYS if not isinstance(checkpoint["config"].get(name), int)]
    if missing:
        raise UserError(f"{path} is damaged: its config has no {missing[0]}; delete it and train again")
    return checkpoint


def check_owner(checkpoint, path, script):
    """A checkpoint of another script is an error naming it; one that says what it is names the command for it."""
    if isinstance(checkpoint, dict) and checkpoint.get("script") == script:
        return
    found = checkpoint.get("script") if isinstance(checkpoint, dict) else None
    what, sample_with = (checkpoint.get(key) if isinstance(checkpoint, dict) else None for key in
                         ("what", "sample_with"))
    if isinstance(what, str) and isinstance(sample_with, str):
        raise UserError(f"{path} is {what}, not a checkpoint of {script}.py; sample it with: {sample_with}")
    raise UserError(f"{path} is not a checkpoint of {script}.py" + (f" (it is from {found}.py)" if found else "")
                    + f"; use that script, or train {script}.py with its own --out_dir")


def check_keys(checkpoint, path, keys, fix):
    """Each key of keys is in the checkpoint with its type (an int is not a bool; a float may be an int)."""
    for key, kind in keys.items():
        value = checkpoint.get(key)
        ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
        if not ok:
            found = "missing" if key not in checkpoint else f"a {type(value).__name__}, not a {kind.__name__}"
            raise UserError(f"{path} is damaged: its {key!r} is {found}; {fix}")


def saved_settings(cfg, overrides, checkpoint):
    """The settings of --sample and --resume. The model's shape (MODEL_KEYS) is the saved one: a different value
    on the command line is an error naming both. --resume takes the saved run's other settings too, then the
    command line's; --sample takes only the model's from the checkpoint."""
    saved = checkpoint["config"]
    mode = "sample" if cfg["sample"] else "resume"
    model_settings = saved_model_settings(overrides, saved, cfg["out_dir"], mode)
    if cfg["sample"]:
        return {**cfg, **model_settings}
    check_keys(checkpoint, os.path.join(cfg["out_dir"], "ckpt.pt"), RESUME_KEYS,
               "it can be sampled (--sample) but not resumed; start a new run with another --out_dir")
    cfg = {**HYPERPARAMETERS, **saved, **overrides}
    if cfg["max_iters"] < checkpoint["step"]:
        raise UserError(f"--max_iters={cfg['max_iters']} is before the saved step {checkpoint['step']}; "
                        "resume with a larger --max_iters")
    return cfg


def saved_model_settings(overrides, saved, folder, mode):
    """The settings the saved model was built with (MODEL_KEYS); a different value given is an error naming both
    and the fix that fits the mode: sample, resume or init_from."""
    for name in MODEL_KEYS:
        if name in overrides and overrides[name] != saved[name]:
            raise UserError(f"--{name}={overrides[name]} does not match the saved model ({name}={saved[name]} "
                            f"in {folder}); " + FIXES[mode].format(name=name))
    return {name: saved[name] for name in MODEL_KEYS}


def load_weights(model, checkpoint, path):
    """The checkpoint's weights into the model; a checkpoint whose tensors do not fit it is a clear error."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as error:
        lines = str(error).strip().splitlines()  # "Error(s) in loading state_dict ...:", then what does not fit
        problem = (lines[1] if len(lines) > 1 else lines[0]).strip().rstrip(":.")
        problem = problem if len(problem) <= 100 else problem[:100] + "..."
        raise UserError(f"{path} does not fit {SCRIPT}.py's model ({problem}); it was saved by another version "
                        "of the script: train again, or use another --out_dir") from None
# --- end ---


# --- same in every script: sampling from a saved model ---
def prompt_ids(prompt, stoi):
    """The token ids of --prompt (see read_prompt); an empty prompt starts from a newline (or token 0), as the
    video does."""
    prompt = read_prompt(prompt)
    if prompt:
        return encode(prompt, stoi)
    return encode("\n", stoi) if "\n" in stoi else [0]


def read_prompt(prompt):
    """--prompt as typed -> its text: the two characters \\n are a newline and \\\\ is one backslash, so that a
    prompt of several lines can be typed in every shell."""
    return "\\".join(part.replace("\\n", "\n") for part in prompt.split("\\\\"))


def sample_from_checkpoint(cfg, dev, checkpoint):
    """--sample: the saved model and its vocabulary continue the prompt; returns the model."""
    chars = checkpoint["chars"]
    model = build_model(cfg, len(chars)).to(dev)
    load_weights(model, checkpoint, os.path.join(cfg["out_dir"], "ckpt.pt"))
    show_sample(generate_text(model, cfg, {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars)), dev), cfg)
    return model


def show_sample(text, cfg):
    """Print the sample; with --sample_file, first write it there too, as UTF-8 (the console may not show it all)."""
    if cfg["sample_file"]:
        save_sample(text, cfg["sample_file"])
    print(text)


def save_sample(text, path):
    """--sample_file: the sample as UTF-8, written atomically (its folder is made first if need be)."""
    make_folder(os.path.dirname(path) or ".", "sample_file")
    write_file(path, [text.encode("utf-8")])
# --- end ---


# --- same in every script: the training run ---
LOG_HEADER = "step,train_loss,val_loss,elapsed_s,lr"
CHECKPOINT_NAMES = ("script", "config", "chars", "step", "best_val_loss", "model", "optimizer", "rng_torch",
                    "rng_batches")


class Run:
    """What a training run does besides training, so that the loop shows the lesson: resuming, the evaluation
    windows, keeping the best model, the loss log, the progress bar, the timing, and stopping cleanly.
    extra_state: {name: object with state_dict() and load_state_dict()}, saved in the checkpoint and restored."""

    def __init__(self, cfg, dev, model, optimizer, chars, train_data, val_data, checkpoint=None, master=True,
                 extra_state=None):
        self.cfg, self.model, self.optimizer, self.chars, self.master = cfg, model, optimizer, "".join(chars), master
        self.extra_state = extra_state or {}
        assert not set(self.extra_state) & set(CHECKPOINT_NAMES), "extra_state names must not shadow the checkpoint's"
        self.ckpt_path = os.path.join(cfg["out_dir"], "ckpt.pt")
        self.log_path = os.path.join(cfg["out_dir"], "losses.csv")
        for path in (self.ckpt_path, self.log_path, os.path.join(cfg["out_dir"], "loss.png")):
            if os.path.isdir(path):  # refused at the start, so that no training is lost to it
                raise UserError(f"{path} is a folder; move it out of the way, or choose another --out_dir")
        self.eval_sets = {split: tuple(t.to(dev) for t in windows) for split, windows in (
            ("train", eval_windows(train_data, cfg["block_size"], cfg["eval_train_windows"])),
            ("val", eval_windows(val_data, cfg["block_size"], cfg.get("max_val_windows", 0))))}
        self.batch_generator = torch.Generator().manual_seed(cfg["seed"])  # its own, so that resuming restores it
        self.start_step, self.best_val, self.log_rows, self.warned = 0, float("inf"), [], set()
        self.saved = checkpoint is not None  # whether ckpt.pt holds this run, so that --resume can continue it
        if checkpoint is not None:
            self.restore(checkpoint)
        self.t_start = self.t_last = time.time()
        self.eval_seconds = self.last_eval_seconds = 0.0
        self.step, self.postfix = self.start_step, {}  # postfix: what the bar shows after the loss; scripts may add
        self.bar = tqdm(total=cfg["max_iters"], initial=self.start_step, dynamic_ncols=True, mininterval=0.5,
                        disable=not master)

    def restore(self, checkpoint):
        """Continue from the checkpoint: its weights, optimizer and extra state, random state, step and loss log."""
        if checkpoint["chars"] != self.chars:
            raise UserError(f"{self.ckpt_path} was trained on a text with another vocabulary; resume with the same "
                            "--input_file, or start a new run with another --out_dir")
        load_weights(self.model, checkpoint, self.ckpt_path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for name, obj in self.extra_state.items():
            if checkpoint.get(name):  # an empty state (saved while it was switched off) has nothing to restore
                obj.load_state_dict(checkpoint[name])
        if "rng_torch" in checkpoint:  # without it (a checkpoint written elsewhere) the batches are drawn afresh
            torch.set_rng_state(checkpoint["rng_torch"])
            self.batch_generator.set_state(checkpoint["rng_batches"])
        self.start_step, self.best_val = checkpoint["step"], checkpoint["best_val_loss"]
        self.log_rows = read_log(self.log_path, self.start_step)  # the run evaluates the saved step again
        if self.master:
            print(f"resuming from step {self.start_step} (val loss {self.best_val:.4f})")

    def evaluated(self, step, losses, lr=None):
        """After an evaluation: print and log the losses, and save the model when it is the best so far."""
        lr = self.cfg["learning_rate"] if lr is None else lr
        self.step, now = step, time.time()
        self.last_eval_seconds = now - self.t_last  # the time since the last training step went to evaluating
        self.eval_seconds += self.last_eval_seconds
        tqdm.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        self.log_rows.append(f"{step},{losses['train']:.4f},{losses['val']:.4f},{now - self.t_start:.1f},{lr:.3g}")
        self.write_or_warn(self.log_path, ["\n".join([LOG_HEADER, *self.log_rows, ""]).encode()],
                           "the next evaluation writes the whole log again")
        if not math.isfinite(losses["val"]):
            raise UserError(f"the val loss became {losses['val']} at step {step}; the best model so far is kept in "
                            f"{self.ckpt_path}; try a smaller --learning_rate")
        if losses["val"] < self.best_val:
            self.best_val = losses["val"]
            try:
                save_checkpoint({
                    "script": SCRIPT, "config": self.cfg, "chars": self.chars, "step": step,
                    "best_val_loss": self.best_val, "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "rng_torch": torch.get_rng_state(),
                    "rng_batches": self.batch_generator.get_state(),
                    **{name: obj.state_dict() for name, obj in self.extra_state.items()},
                }, self.ckpt_path)
                self.saved = True
            except FileHeld as error:  # the file held is the previous best model: it can be resumed
                raise UserError(f"{error}; the best model so far is still in it: close that program, then "
                                f"continue with: {command(self.cfg, '--resume')}") from None
        self.t_last = time.time()

    def write_or_warn(self, path, chunks, then):
        """write_file, but a log or a picture held open by another program is one warning line, and training goes on."""
        try:
            write_file(path, chunks)
        except FileHeld as error:
            if path not in self.warned:
                self.warned.add(path)
                tqdm.write(f"warning: {error}; training goes on, and {then}", file=sys.stderr)

    def stepped(self, step, loss, **fields):
        """After a training step: the progress bar; every log_interval steps the loss (and fields) on it."""
        self.bar.update(1)
        self.step, self.t_last = step + 1, time.time()
        if step % self.cfg["log_interval"] == 0:
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise UserError(f"the training loss became {loss_value} at step {step}; the best model so far "
                                f"is kept in {self.ckpt_path}; try a smaller --learning_rate")
            self.postfix["loss"] = f"{loss_value:.4f}"
            self.postfix.update({name: f"{float(value):.3g}" for name, value in fields.items()})
            self.bar.set_postfix(self.postfix, refresh=False)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.bar.close()  # before any message, so that the message gets a line of its own
        if kind is KeyboardInterrupt:
            if self.master and self.saved:
                print(f"\ninterrupted at step {self.step}; the best model so far is in {self.ckpt_path}; "
                      f"continue with: {command(self.cfg, '--resume')}", file=sys.stderr)
            elif self.master:  # the first evaluation had not saved a model yet: there is nothing to resume
                print(f"\ninterrupted at step {self.step}, before this run saved a model; nothing to resume: run the "
                      "same command again", file=sys.stderr)
            sys.exit(130)
        if out_of_memory(error):
            more = " with more --grad_accum_steps (the same global batch)" if "grad_accum_steps" in self.cfg else ""
            raise UserError(f"{out_of_memory(error)} ran out of memory with --batch_size={self.cfg['batch_size']}; "
                            f"try a smaller --batch_size{more}") from None

    def finished(self):
        """After the last step: how long training took, and the plot of the loss log."""
        if self.master:
            print(f"training took {time.time() - self.t_start:.1f} s ({self.eval_seconds:.1f} s of it evaluating); "
                  f"best val loss {self.best_val:.4f}, saved in {self.ckpt_path}")
            try:
                plot_losses(self.log_rows, self.log_path, f"{SCRIPT}.py on {self.cfg['input_file']}")
            except FileHeld as error:
                print(f"warning: {error}; it keeps its last picture, and {self.log_path} has every loss",
                      file=sys.stderr)


def read_log(path, before_step):
    """The rows of the loss log at path before before_step. A damaged log is read as far as it can be: rows that
    are not five numbers are dropped, with one warning line; the log is a record, the checkpoint holds the run."""
    if not os.path.exists(path):
        return []
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; move it out of the way, or choose another --out_dir")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    rows, dropped = [], 0
    for line in lines[1:] if lines and lines[0] == LOG_HEADER else lines:
        fields = line.split(",")
        try:
            step, _ = int(fields[0]), [float(x) for x in fields[1:]]
            ok = len(fields) == 5
        except ValueError:
            ok = False
        if not ok:
            dropped += 1
        elif step < before_step:
            rows.append(line)
    if dropped or lines[:1] != [LOG_HEADER]:
        print(f"warning: {path} is damaged: {dropped} unreadable row(s) dropped, {len(rows)} kept; "
              "training goes on and rewrites it at the next evaluation", file=sys.stderr)
    return rows


def out_of_memory(error):
    """'CUDA' or 'MPS' when the error is that device running out of memory (MPS raises a plain RuntimeError)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "CUDA"
    if isinstance(error, RuntimeError) and "MPS backend out of memory" in str(error):
        return "MPS"
    return None


def eval_windows(data, block_size, max_windows):
    """The windows estimate_loss scores: every non-overlapping window of the data, or max_windows spread evenly."""
    n_windows = (len(data) - 1) // block_size
    count = min(n_windows, max_windows) if max_windows else n_windows
    return get_windows(data, [(i * n_windows // count) * block_size for i in range(count)], block_size)
# --- end ---


# --- same in every script: plots ---
def import_pyplot():
    """matplotlib's pyplot, drawing into files; UserError says how to install it, or why it does not import."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as error:
        if error.name == "matplotlib":
            raise UserError("matplotlib is not installed; pip install matplotlib") from None
        raise UserError(f"matplotlib is installed but does not import ({error}); "
                        "pip install --upgrade matplotlib") from None
    except Exception as error:
        raise UserError(f"matplotlib is installed but does not import ({type(error).__name__}: {error}); "
                        "pip install --upgrade matplotlib") from None
    return plt


def save_figure(fig, path):
    """Draw the figure into memory, then write it atomically as a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    import_pyplot().close(fig)
    write_file(path, [buffer.getvalue()])


def plot_losses(rows, csv_path, title):
    """Train and val loss against step, as loss.png beside the loss log (without matplotlib, say how to get it)."""
    try:
        plt = import_pyplot()
    except UserError as error:
        print(f"loss log in {csv_path}; no plot of it: {error}")
        return
    if not rows:
        return
    steps, train_losses, val_losses = zip(*[(int(s), float(t), float(v)) for s, t, v, *_ in
                                            (row.split(",") for row in rows)], strict=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, train_losses, marker=".", label="train loss")
    ax.plot(steps, val_losses, marker=".", label="val loss")
    ax.set(xlabel="step", ylabel="loss (nats per character)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = os.path.join(os.path.dirname(csv_path), "loss.png")
    save_figure(fig, png_path)
    print(f"loss curves in {png_path}")
# --- end ---


# --- same in every script: entry point ---
if __name__ == "__main__":
    for stream in (sys.stdout, sys.stderr):  # a character the console cannot encode prints as ?, never a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        main(sys.argv[1:])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (RuntimeError, MemoryError) as error:  # out of memory making the model, the optimizer or a batch
        if not memory_ran_out(error):
            raise
        print(f"error: {memory_ran_out(error)} ran out of memory; try a smaller --batch_size, or a smaller model",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C before training or after it (during training, Run says how to resume)
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
# --- end ---
