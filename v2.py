"""Lesson 2: a transformer that reads the context (the video's final model, small size).

Adds to bigram.py: position embeddings, masked multi-head self-attention, a feed-forward
layer, residual connections and LayerNorm, stacked n_layer times.
Run:    python v2.py                      (train, save the best model to out/v2/)
        python v2.py --sample --prompt="ROMEO:"    (generate from the saved model)
Result: val loss 4.38 -> 1.8011 in 5000 steps, 42 s on 2 CPU cores, 2.9x faster than the video's
        code on the same machine (2026-11-26).
"""

import csv
import hashlib
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
eval_train_windows = 1000  # train windows scored at each evaluation (val scores its whole split)
eval_batch_size = 100  # windows per forward pass during evaluation
log_interval = 10  # steps between updates of the loss on the progress bar
seed = 1337  # random seed for the weights, the batches and sampling
device = ""  # cuda, mps or cpu; empty picks cuda, then mps, then cpu
input_file = "input.txt"  # training text (any UTF-8 file); tiny Shakespeare is downloaded if missing
out_dir = "out/v2"  # where the best model and the loss log are written
resume = False  # --resume: continue training from the checkpoint in out_dir
sample = False  # --sample: generate from the saved model instead of training
prompt = ""  # text the sample continues (empty: start from a newline)
max_new_tokens = 500  # characters to generate
temperature = 1.0  # sampling temperature: <1 sharper, >1 flatter, 0 always the likeliest character
top_k = 0  # sample only among the k likeliest characters (0: all of them)

# every name above is a hyperparameter: `python v2.py --name=value` overrides it
HYPERPARAMETERS = {k: v for k, v in globals().items() if type(v) in (bool, int, float, str) and not k.startswith("_")}
SCRIPT = "v2"


# --- same in every script: errors and command-line overrides ---
class UserError(Exception):
    """A mistake the user can fix: printed as one line, without a traceback."""


def parse_overrides(argv, defaults):
    """['--name=value', '--flag', ...] -> {name: value}, each value of its default's type."""
    valid = ", ".join(f"--{name}" for name in defaults)
    overrides = {}
    for arg in argv:
        name, has_value, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or name not in defaults:
            raise UserError(f"unknown option {arg!r}; valid options (as --name=value): {valid}")
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


def check_config(cfg):
    """Reject hyperparameter values that cannot train, before any work starts."""
    for name in ("batch_size", "block_size", "max_iters", "eval_interval", "n_embd", "n_head", "n_layer",
                 "eval_train_windows", "eval_batch_size", "log_interval", "grad_accum_steps", "max_val_windows"):
        if name in cfg and cfg[name] <= 0:
            raise UserError(f"--{name} must be a positive integer, got {cfg[name]}")
    if "n_head" in cfg and cfg["n_embd"] % cfg["n_head"]:
        raise UserError(f"--n_embd={cfg['n_embd']} must be divisible by --n_head={cfg['n_head']}")
    if cfg["eval_interval"] > cfg["max_iters"]:
        raise UserError(f"--eval_interval={cfg['eval_interval']} is larger than --max_iters={cfg['max_iters']}")
    if not (math.isfinite(cfg["learning_rate"]) and cfg["learning_rate"] > 0):
        raise UserError(f"--learning_rate must be a finite positive number, got {cfg['learning_rate']}")
    if "dropout" in cfg and not 0 <= cfg["dropout"] < 1:
        raise UserError(f"--dropout must be in [0, 1), got {cfg['dropout']}")
    if not (math.isfinite(cfg["temperature"]) and cfg["temperature"] >= 0):
        raise UserError(f"--temperature must be 0 (greedy) or positive, got {cfg['temperature']}")
    if cfg["top_k"] < 0 or cfg["max_new_tokens"] < 0:
        raise UserError("--top_k and --max_new_tokens must not be negative")
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
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(content)
    os.replace(tmp, path)


def check_input_file(path):
    """Make sure path is a readable file, downloading tiny Shakespeare for the default input.txt."""
    if not os.path.exists(path) and os.path.basename(path) == "input.txt":
        download_tiny_shakespeare(path)
    if not os.path.exists(path):
        raise UserError(f"input file {path} does not exist; pass --input_file=PATH to a UTF-8 text file")
    if os.path.isdir(path):
        raise UserError(f"input file {path} is a directory; pass --input_file=PATH to a UTF-8 text file")
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


def read_text(path):
    """The whole input file as one string (lessons 1 and 2 hold the text in memory)."""
    check_input_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise UserError(f"input file {path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                        "convert it to UTF-8 first") from None


# --- same in every script: tokenizer ---
def encode(s, stoi):
    """String -> list of token ids, one per character."""
    unknown = sorted(set(s) - stoi.keys())
    if unknown:
        raise UserError(f"characters not in the model's vocabulary: {''.join(unknown)!r}; use only characters "
                        "that occur in the training text")
    return [stoi[c] for c in s]


def decode(ids, itos):
    """List of token ids -> string."""
    return "".join(itos[i] for i in ids)
# --- end ---


# --- same in every script: batches ---
def get_windows(data, starts, block_size):
    """Inputs x and targets y: the windows at each start offset, and the same windows one character later."""
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in starts])  # (B, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in starts])  # (B, T)
    return x, y


def get_batch(data, batch_size, block_size, generator):
    """A random batch of windows, drawn with its own generator so that resuming can restore it."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()
    return get_windows(data, starts, block_size)
# --- end ---


# model
# B=batch, T=time, C=n_embd, nh=n_head, hs=head_size, V=vocab_size
class MultiHeadAttention(nn.Module):
    """Masked multi-head self-attention.

    differs from the video: the video builds n_head Head modules, each with its own key, query and value
    Linear(n_embd, head_size), and concatenates their outputs. Here one Linear(n_embd, 3 * n_embd) computes
    all of them in one matmul (head h's key weight is rows h*hs..(h+1)*hs of the key third), and
    F.scaled_dot_product_attention computes softmax(q @ k^T / sqrt(hs)) with the causal mask, then @ v,
    in one fused kernel. Same parameters, same function, a fraction of the time.
    """

    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)  # query, key, value of every head
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x):
        B, T, C = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        out = out.transpose(1, 2).reshape(B, T, C)  # (B, T, C): the heads side by side, as torch.cat
        return self.dropout(self.proj(out))  # (B, T, C)


class FeedForward(nn.Module):
    """A linear layer to 4x width, a ReLU, and back: computation on each position by itself."""

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
    """Transformer block: communication (attention) then computation (feed-forward), each on a residual path."""

    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.sa = MultiHeadAttention(n_embd, n_head, dropout)
        self.ffwd = FeedForward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))  # (B, T, C): pre-LayerNorm, then a residual connection
        x = x + self.ffwd(self.ln2(x))  # (B, T, C)
        return x


class GPTLanguageModel(nn.Module):
    """Token and position embeddings, n_layer blocks, a final LayerNorm and a linear head to the vocabulary."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout):
        super().__init__()
        self.block_size = block_size
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
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
            idx_cond = idx[:, -self.block_size:]  # (B, <=block_size): the positions the model has
            logits, _ = self(idx_cond)  # (B, T, V)
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx


# --- same in every script: sampling ---
def sample_next(logits, temperature, top_k, generator):
    """Pick the next token id from the last position's logits (B, V) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1): greedy
    logits = logits / temperature  # (B, V)
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k): top_k is clamped to the vocabulary
        logits[logits < v[:, [-1]]] = -float("inf")  # (B, V)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


def prompt_ids(prompt, stoi):
    """The prompt's token ids; an empty prompt starts from a newline (or token 0), as the video does."""
    if prompt:
        return encode(prompt, stoi)
    return encode("\n", stoi) if "\n" in stoi else [0]
# --- end ---


# --- same in every script: evaluation ---
def eval_starts(n_tokens, block_size, max_windows):
    """Start offsets of non-overlapping windows covering a split: all of them, or max_windows evenly spread."""
    n_windows = (n_tokens - 1) // block_size
    count = min(n_windows, max_windows) if max_windows else n_windows
    return [(i * n_windows // count) * block_size for i in range(count)]


@torch.no_grad()
def estimate_loss(model, eval_sets, batch_size):
    """Mean loss over every window of each eval set, in eval mode (no dropout).

    differs from the video: the video averages 200 random small batches per split, a noisy estimate that
    moves from one evaluation to the next; this scores the whole val split (and a fixed train sample),
    so the number is exact and two evaluations of the same model agree.
    """
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


# --- same in every script: checkpoints and loss log ---
def save_checkpoint(checkpoint, path):
    """Write atomically: a temp file, flushed to disk, then renamed, so a kill never leaves half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path, script):
    """Load a checkpoint of this script with weights_only=True: tensors and plain Python types, never code."""
    if not os.path.exists(path):
        raise UserError(f"no saved model at {path}; train one first with: python {script}.py")
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
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != script:
        found = checkpoint.get("script") if isinstance(checkpoint, dict) else None
        raise UserError(f"{path} is not a checkpoint of {script}.py" + (f" (it is from {found}.py)" if found else "")
                        + f"; use that script, or train {script}.py with its own --out_dir")
    return checkpoint


def log_losses(path, step, losses, elapsed, lr):
    """Append one evaluation to the loss log (a CSV file), writing the header first."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "train_loss", "val_loss", "elapsed_s", "lr"])
        writer.writerow([step, f"{losses['train']:.4f}", f"{losses['val']:.4f}", f"{elapsed:.1f}", f"{lr:.3g}"])


def trim_loss_log(path, step):
    """On resume, drop the rows from the checkpoint's step on: the run evaluates that step again."""
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(rows[:1] + [r for r in rows[1:] if int(r[0]) < step])


def plot_losses(csv_path, png_path, title):
    """Train and val loss against step, as a PNG (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"loss log in {csv_path}; pip install matplotlib to also get a plot of it")
        return
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in ("train", "val"):
        ax.plot(steps, [float(r[f"{split}_loss"]) for r in rows], marker=".", label=f"{split} loss")
    ax.set(xlabel="step", ylabel="loss (nats per character)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    print(f"loss curves in {png_path}")
# --- end ---


def build_model(cfg, vocab_size):
    return GPTLanguageModel(vocab_size, cfg["block_size"], cfg["n_embd"], cfg["n_head"], cfg["n_layer"],
                            cfg["dropout"])


def generate_text(model, cfg, stoi, itos, dev):
    """Continue the prompt with max_new_tokens characters and return the whole text."""
    generator = torch.Generator(dev).manual_seed(cfg["seed"])
    idx = torch.tensor([prompt_ids(cfg["prompt"], stoi)], dtype=torch.long, device=dev)  # (1, T)
    model.eval()
    out = model.generate(idx, cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], generator)  # (1, T+new)
    return decode(out[0].tolist(), itos)


def sample_from_checkpoint(cfg, dev):
    """--sample: load the saved model and its vocabulary, print a continuation of the prompt."""
    checkpoint = load_checkpoint(os.path.join(cfg["out_dir"], "ckpt.pt"), SCRIPT)
    chars = checkpoint["chars"]
    stoi = {ch: i for i, ch in enumerate(chars)}
    model = build_model({**cfg, **checkpoint["config"]}, len(chars)).to(dev)
    model.load_state_dict(checkpoint["model"])
    print(generate_text(model, cfg, stoi, dict(enumerate(chars)), dev))


def train(cfg, dev):
    # 1) data: the text, its vocabulary, and the 90% / 10% train / val split
    text = read_text(cfg["input_file"])
    chars = sorted(set(text))
    check_text(cfg["input_file"], len(text), len(chars), cfg["block_size"])
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = dict(enumerate(chars))
    data = np.array(encode(text, stoi), dtype=np.int64)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    eval_sets = {
        "train": get_windows(train_data, eval_starts(len(train_data), cfg["block_size"], cfg["eval_train_windows"]),
                             cfg["block_size"]),
        "val": get_windows(val_data, eval_starts(len(val_data), cfg["block_size"], 0), cfg["block_size"]),
    }
    eval_sets = {split: (x.to(dev), y.to(dev)) for split, (x, y) in eval_sets.items()}

    # 2) model, optimizer, and the generator that draws batches
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, len(chars)).to(dev)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    fused = dev in ("cuda", "cpu")  # one kernel for the whole update instead of one per parameter
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], fused=fused)
    batch_generator = torch.Generator().manual_seed(cfg["seed"])
    ckpt_path = os.path.join(cfg["out_dir"], "ckpt.pt")
    log_path = os.path.join(cfg["out_dir"], "losses.csv")
    os.makedirs(cfg["out_dir"], exist_ok=True)
    start_step, best_val = 0, float("inf")
    if cfg["resume"]:
        checkpoint = load_checkpoint(ckpt_path, SCRIPT)
        if checkpoint["chars"] != "".join(chars):
            raise UserError(f"{ckpt_path} was trained on a text with another vocabulary; resume with the same "
                            "--input_file, or start a new run with another --out_dir")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng_torch"])
        batch_generator.set_state(checkpoint["rng_batches"])
        start_step, best_val = checkpoint["step"], checkpoint["best_val_loss"]
        trim_loss_log(log_path, start_step)
        print(f"resuming from step {start_step} (val loss {best_val:.4f})")
    elif os.path.exists(log_path):
        os.remove(log_path)

    # 3) the training loop: evaluate every eval_interval steps, keep the best model
    t0, eval_seconds = time.time(), 0.0
    bar = tqdm(total=cfg["max_iters"], initial=start_step, dynamic_ncols=True, mininterval=0.5)
    step = start_step
    try:
        for step in range(start_step, cfg["max_iters"] + 1):
            if step % cfg["eval_interval"] == 0 or step == cfg["max_iters"]:
                t_eval = time.time()
                losses = estimate_loss(model, eval_sets, cfg["eval_batch_size"])
                eval_seconds += time.time() - t_eval
                tqdm.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                log_losses(log_path, step, losses, time.time() - t0, cfg["learning_rate"])
                if losses["val"] < best_val:
                    best_val = losses["val"]
                    save_checkpoint({
                        "script": SCRIPT, "config": cfg, "chars": "".join(chars), "step": step,
                        "best_val_loss": best_val, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng_torch": torch.get_rng_state(), "rng_batches": batch_generator.get_state(),
                    }, ckpt_path)
            if step == cfg["max_iters"]:
                break
            xb, yb = get_batch(train_data, cfg["batch_size"], cfg["block_size"], batch_generator)
            logits, loss = model(xb.to(dev), yb.to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            if step % cfg["log_interval"] == 0:
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise UserError(f"the training loss became {loss_value} at step {step}; the best model so far "
                                    f"is kept in {ckpt_path}; try a smaller --learning_rate")
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted at step {step}; the best model so far is in {ckpt_path}; "
              f"continue with: python {SCRIPT}.py --resume", file=sys.stderr)
        sys.exit(130)
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"CUDA ran out of memory with --batch_size={cfg['batch_size']}; "
                        "try a smaller --batch_size") from None
    finally:
        bar.close()  # before any error message, so that the message gets a line of its own
    print(f"training took {time.time() - t0:.1f} s ({eval_seconds:.1f} s of it evaluating); "
          f"best val loss {best_val:.4f}, saved in {ckpt_path}")
    plot_losses(log_path, os.path.join(cfg["out_dir"], "loss.png"), f"{SCRIPT}.py on {cfg['input_file']}")

    # 4) a sample from the trained model
    print(generate_text(model, cfg, stoi, itos, dev))


def main(argv):
    overrides = parse_overrides(argv, HYPERPARAMETERS)
    cfg = {**HYPERPARAMETERS, **overrides}
    if cfg["resume"] and not cfg["sample"]:
        checkpoint_cfg = load_checkpoint(os.path.join(cfg["out_dir"], "ckpt.pt"), SCRIPT)["config"]
        cfg = {**HYPERPARAMETERS, **checkpoint_cfg, **overrides}  # the saved run's settings, then the new ones
    check_config(cfg)
    dev = pick_device(cfg["device"])
    print(f"using device: {dev}")
    if cfg["sample"]:
        sample_from_checkpoint(cfg, dev)
    else:
        train(cfg, dev)


# --- same in every script: entry point ---
if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
# --- end ---
