"""Lesson 3: the full GPT-2 architecture (10.8M parameters) and the recipe that trains it fast.

Adds to v2.py: GPT-2's modules and initialisation, weight tying, GELU, AdamW with weight decay,
warmup and cosine decay, gradient clipping and accumulation, bf16 and torch.compile on CUDA,
resumable checkpoints, a key/value cache for sampling, any size of text, and many GPUs via torchrun.
Run:    python gpt2.py              (a GPU; on a laptop see the recipe this prints, or the README)
        python gpt2.py --resume     python gpt2.py --sample --prompt="ROMEO:"
        torchrun --standalone --nproc_per_node=8 gpt2.py --grad_accum_steps=8 --batch_size=8
Result: val loss 1.4457 on one H100, below 1.47 after 55 s, 66 s in all (43 s and 51 s on another
        H100; 2026-11-26); the laptop recipe: 1.5104 in 531 s on 2 CPU cores.
"""

import csv
import hashlib
import importlib.util
import json
import math
import os
import pickle
import sys
import time
import urllib.request
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

# hyperparameters
batch_size = 64  # sequences per forward pass during training (B)
block_size = 256  # max context length in characters (T)
max_iters = 2000  # training steps (optimizer updates)
eval_interval = 250  # steps between evaluations of the train and val loss
learning_rate = 1e-3  # AdamW step size
min_lr = 1e-4  # step size at the end of the cosine decay
warmup_iters = 100  # steps of linear warmup from 0 to learning_rate (the peak step size)
weight_decay = 0.1  # AdamW weight decay on matrices and embeddings (not on biases and LayerNorms)
beta1 = 0.9  # AdamW momentum of the gradient
beta2 = 0.99  # AdamW momentum of the squared gradient
grad_clip = 1.0  # clip the gradient's global norm to this (0: no clipping)
grad_accum_steps = 1  # micro-batches per step: the global batch is batch_size * grad_accum_steps sequences
n_layer = 6  # transformer blocks
n_head = 6  # attention heads per layer (nh); head_size = n_embd // n_head
n_embd = 384  # width of the token representation (C)
dropout = 0.2  # probability of zeroing an activation during training
time_budget = 0  # seconds for the whole run: >0 sets max_iters from the measured step time (0: off)
compile = True  # torch.compile the model (CUDA only)
eval_train_windows = 512  # train windows scored at each evaluation (val scores its whole split)
max_val_windows = 8192  # cap on val windows per evaluation, for large texts (tiny Shakespeare has 435)
eval_batch_size = 128  # windows per forward pass during evaluation
log_interval = 10  # steps between updates of the loss on the progress bar
seed = 1337  # random seed for the weights, the batches and sampling
device = ""  # cuda, mps or cpu; empty picks cuda, then mps, then cpu
input_file = "input.txt"  # training text (any UTF-8 file); tiny Shakespeare is downloaded if missing
out_dir = "out/gpt2"  # where the best model and the loss log are written
resume = False  # --resume: continue training from the checkpoint in out_dir
sample = False  # --sample: generate from the saved model instead of training
prompt = ""  # text the sample continues (empty: start from a newline)
max_new_tokens = 500  # characters to generate
temperature = 1.0  # sampling temperature: <1 sharper, >1 flatter, 0 always the likeliest character
top_k = 0  # sample only among the k likeliest characters (0: all of them)
kv_cache = True  # sample with a key/value cache (False: recompute the whole context for every token)

# every name above is a hyperparameter: `python gpt2.py --name=value` overrides it
HYPERPARAMETERS = {k: v for k, v in globals().items() if type(v) in (bool, int, float, str) and not k.startswith("_")}
SCRIPT = "gpt2"
MODEL_KEYS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")  # what a checkpoint's model is built from
LAPTOP_RECIPE = ("--n_layer=4 --n_head=4 --n_embd=128 --block_size=128 --batch_size=16 --dropout=0.0 "
                 "--learning_rate=2e-3 --min_lr=2e-4 --eval_interval=1000 --time_budget=600")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core peak, for MFU

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

def token_cache_paths(path, out_dir):
    """The token file and its description, next to the text (or in out_dir if that folder is read-only)."""
    folder = os.path.dirname(os.path.abspath(path))
    base = path if os.access(folder, os.W_OK) else os.path.join(out_dir, os.path.basename(path))
    return base + ".tokens.bin", base + ".tokens.json"


def load_tokens(path, out_dir, chunk_chars=1 << 22):
    """Vocabulary and token ids of a text of any size, without holding the text in memory.

    The first run streams the text twice (once for the vocabulary, once to encode it) into a flat
    binary token file, one byte per character when the vocabulary fits (else two); later runs map
    that file with np.memmap, so only the windows a batch needs are read. The file is rebuilt when
    the text's size or modification time changes.
    """
    check_input_file(path)
    bin_path, meta_path = token_cache_paths(path, out_dir)
    stat = os.stat(path)
    source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    meta = None
    if os.path.exists(meta_path) and os.path.exists(bin_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    if meta is None or meta["source"] != source:
        meta = encode_to_file(path, bin_path, meta_path, source, chunk_chars)
    data = np.memmap(bin_path, dtype=meta["dtype"], mode="r") if meta["n_tokens"] else np.zeros(0, np.uint8)
    return meta["chars"], data


def encode_to_file(path, bin_path, meta_path, source, chunk_chars):
    """Stream the text into the token file; write both files atomically (temp file, then rename)."""
    print(f"encoding {path} into {bin_path}")
    os.makedirs(os.path.dirname(os.path.abspath(bin_path)), exist_ok=True)
    try:
        chars = set()
        with open(path, encoding="utf-8") as f:
            while chunk := f.read(chunk_chars):
                chars.update(chunk)
        chars = sorted(chars)
        if len(chars) > 65535:
            raise UserError(f"{path} has {len(chars)} distinct characters; at most 65535 are supported")
        dtype = "uint8" if len(chars) <= 256 else "uint16"
        codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted, so id = rank of the codepoint
        n_tokens = 0
        with open(path, encoding="utf-8") as f, open(bin_path + ".tmp", "wb") as out:
            while chunk := f.read(chunk_chars):
                codes = np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)
                np.searchsorted(codepoints, codes).astype(dtype).tofile(out)
                n_tokens += len(codes)
    except UnicodeDecodeError as error:
        raise UserError(f"input file {path} is not UTF-8 text ({error.reason}); convert it to UTF-8 first") from None
    os.replace(bin_path + ".tmp", bin_path)
    meta = {"source": source, "chars": "".join(chars), "dtype": dtype, "n_tokens": n_tokens}
    with open(meta_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(meta, f)
    os.replace(meta_path + ".tmp", meta_path)
    return meta


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

def step_seed(seed, step, micro):
    """The seed of one micro-batch of one step (micro counts across all processes).

    Batches and dropout masks depend only on (seed, step, micro), so a run draws the same numbers
    on 1 or N processes, and a resumed run draws what the uninterrupted run would have drawn.
    """
    return (seed * 1_000_003 + step) * 1_000_003 + micro


# model
# B=batch, T=time, C=n_embd, nh=n_head, hs=head_size, V=vocab_size
@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2


class KVCache:
    """Keys and values of the positions seen so far, for every layer, so a new token costs one position's work."""

    def __init__(self, config, batch, device, dtype):
        shape = (config.n_layer, batch, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, block_size, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, block_size, hs)
        self.length = 0  # positions filled

    def update(self, layer, k, v):
        """Store the new positions' k, v (B, nh, T, hs); return all of them so far (B, nh, length + T, hs)."""
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length:end] = k  # (B, nh, T, hs) into positions length..end
        self.v[layer, :, :, self.length:end] = v  # (B, nh, T, hs)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    """GPT-2 attention: every head's query, key and value from one matmul (c_attn), then c_proj."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual = True  # scaled at init, see GPT._init_weights
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, layer=0):
        B, T, C = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        p = self.attn_dropout if self.training else 0.0
        if cache is None or cache.length == 0:  # training, or filling an empty cache: plain causal attention
            if cache is not None:
                cache.update(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        else:  # new positions attend to every cached position and causally among themselves
            k, v = cache.update(layer, k, v)  # (B, nh, S, hs): S = cached positions + T
            S = k.size(2)
            if T == 1:
                mask = None  # one new position sees every cached one
            else:
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)  # (T, S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): the heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    """c_fc to 4x width, GELU (tanh approximation, as GPT-2), c_proj back."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cache, layer)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """GPT-2: module names match the reference implementation, so its weights map one to one."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix embeds and un-embeds
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """GPT-2 init: N(0, 0.02) weights, zero biases; residual projections scaled by 1/sqrt(2 n_layer)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(module, "residual", False) else 0.02
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, cache=None):
        B, T = idx.shape  # (B, T)
        start = cache.length if cache is not None else 0
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if cache is not None:
            cache.length += T
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))  # mean over the B*T positions
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=0, generator=None, use_cache=True):
        """Append max_new_tokens sampled tokens to idx (B, T), one at a time, each fed back as input."""
        block_size = self.config.block_size
        cache = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(idx[:, -block_size:])  # (B, T, V): the whole context, every time
            elif cache is None or cache.length == block_size:
                # (re)fill the cache. Positions are learned, so once the window is full every token's
                # position shifts and no cached key stays exact: keep the last half of the window,
                # recompute its keys and values, and continue from there.
                keep = block_size if cache is None else block_size // 2
                cache = KVCache(self.config, idx.size(0), idx.device, self.transformer.wte.weight.dtype)
                logits, _ = self(idx[:, -keep:], cache=cache)  # (B, T, V)
            else:
                logits, _ = self(idx[:, -1:], cache=cache)  # (B, 1, V): only the newest position
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

def configure_optimizer(model, cfg, fused):
    """AdamW with weight decay on the 2-D tensors (matrices, embeddings), none on biases and LayerNorms."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied lm_head / wte weight once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]), fused=fused)


def get_lr(step, cfg):
    """Linear warmup to learning_rate over warmup_iters steps, then cosine decay to min_lr at max_iters."""
    if step < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (step + 1) / cfg["warmup_iters"]
    progress = min(1.0, (step - cfg["warmup_iters"]) / max(1, cfg["max_iters"] - cfg["warmup_iters"]))
    return cfg["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg["learning_rate"] - cfg["min_lr"])


def forward_backward(model, micro_batches, autocast, ddp=False):
    """Accumulate the gradient of the mean loss over micro-batches; return that mean loss.

    micro_batches yields (seed, x, y); each micro-batch's dropout is seeded by its own seed. Under
    DistributedDataParallel the gradients are averaged across processes on the last micro-batch only.
    """
    micro_batches = list(micro_batches)
    total = 0.0
    for i, (micro_seed, x, y) in enumerate(micro_batches):
        torch.manual_seed(micro_seed)
        last = i == len(micro_batches) - 1
        with (model.no_sync() if ddp and not last else nullcontext()), autocast:
            _, loss = model(x, y)
        (loss / len(micro_batches)).backward()
        total += loss.detach()
    return total / len(micro_batches)


def flops_per_token(model):
    """Forward + backward FLOPs per token: 6 per weight, plus attention's 12 * n_layer * block_size * n_embd."""
    c = model.config
    n_weights = sum(p.numel() for p in model.parameters()) - c.block_size * c.n_embd  # wpe is a lookup
    return 6 * n_weights + 12 * c.n_layer * c.block_size * c.n_embd


def peak_flops(dev):
    """The GPU's bf16 tensor-core peak, when it is one we know; MFU is not shown otherwise."""
    if dev.startswith("cuda"):
        name = torch.cuda.get_device_name(dev)
        return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)
    return None


def model_config(cfg, vocab_size):
    return GPTConfig(vocab_size=vocab_size, **{key: cfg[key] for key in MODEL_KEYS})


def generate_text(model, cfg, stoi, itos, dev):
    """Continue the prompt with max_new_tokens characters and return the whole text."""
    generator = torch.Generator(dev).manual_seed(cfg["seed"])
    idx = torch.tensor([prompt_ids(cfg["prompt"], stoi)], dtype=torch.long, device=dev)  # (1, T)
    model.eval()
    out = model.generate(idx, cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], generator,
                         use_cache=cfg["kv_cache"])  # (1, T+new)
    return decode(out[0].tolist(), itos)


def sample_from_checkpoint(cfg, dev):
    """--sample: load the saved model and its vocabulary, print a continuation of the prompt."""
    checkpoint = load_checkpoint(os.path.join(cfg["out_dir"], "ckpt.pt"), SCRIPT)
    chars = checkpoint["chars"]
    stoi = {ch: i for i, ch in enumerate(chars)}
    model = GPT(model_config(checkpoint["config"], len(chars))).to(dev)
    model.load_state_dict(checkpoint["model"])
    print(generate_text(model, cfg, stoi, dict(enumerate(chars)), dev))


def setup_distributed(dev):
    """Under torchrun (RANK and WORLD_SIZE set): join the process group; returns (rank, world_size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, dev
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if dev == "cuda":
        dev = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
    return rank, world_size, dev


def train(cfg, dev, rank, world_size, t_start):
    master = rank == 0  # rank 0 alone prints, evaluates, saves and samples
    say = print if master else (lambda *args, **kwargs: None)
    if cfg["grad_accum_steps"] % world_size:
        raise UserError(f"--grad_accum_steps={cfg['grad_accum_steps']} must be divisible by the number of "
                        f"processes ({world_size}), so that the global batch stays the same")
    accum_per_rank = cfg["grad_accum_steps"] // world_size
    cuda = dev.startswith("cuda")

    # 1) data: the vocabulary and a memory-mapped token file, split 90% / 10% into train / val
    failure = None
    if master:  # rank 0 builds the token file once; the others then read it
        try:
            load_tokens(cfg["input_file"], cfg["out_dir"])
        except UserError as error:
            failure = str(error)
    if world_size > 1:
        message = [failure]
        dist.broadcast_object_list(message, src=0)  # so that every process stops with rank 0's error
        failure = message[0]
    if failure:
        raise UserError(failure)
    chars, data = load_tokens(cfg["input_file"], cfg["out_dir"])
    check_text(cfg["input_file"], len(data), len(chars), cfg["block_size"])
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = dict(enumerate(chars))
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    eval_sets = {
        "train": get_windows(train_data, eval_starts(len(train_data), cfg["block_size"], cfg["eval_train_windows"]),
                             cfg["block_size"]),
        "val": get_windows(val_data, eval_starts(len(val_data), cfg["block_size"], cfg["max_val_windows"]),
                           cfg["block_size"]),
    }
    eval_sets = {split: (x.to(dev), y.to(dev)) for split, (x, y) in eval_sets.items()}

    # 2) precision: bf16 autocast and TF32 matmuls on CUDA, float32 elsewhere
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bf16 = cuda and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()

    # 3) model and optimizer (fresh, or restored from the checkpoint)
    torch.manual_seed(cfg["seed"])
    config = model_config(cfg, len(chars))
    raw_model = GPT(config).to(dev)
    say(f"{sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M parameters")
    optimizer = configure_optimizer(raw_model, cfg, fused=cuda or dev == "cpu")
    ckpt_path = os.path.join(cfg["out_dir"], "ckpt.pt")
    log_path = os.path.join(cfg["out_dir"], "losses.csv")
    os.makedirs(cfg["out_dir"], exist_ok=True)
    start_step, best_val = 0, float("inf")
    if cfg["resume"]:
        checkpoint = load_checkpoint(ckpt_path, SCRIPT)
        if checkpoint["chars"] != "".join(chars):
            raise UserError(f"{ckpt_path} was trained on a text with another vocabulary; resume with the same "
                            "--input_file, or start a new run with another --out_dir")
        raw_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_step, best_val = checkpoint["step"], checkpoint["best_val_loss"]
        if master:
            trim_loss_log(log_path, start_step)
        say(f"resuming from step {start_step} (val loss {best_val:.4f})")
    elif master and os.path.exists(log_path):
        os.remove(log_path)
    use_compile = cfg["compile"] and cuda and importlib.util.find_spec("triton") is not None  # never on MPS or CPU
    model = torch.compile(raw_model) if use_compile else raw_model
    if world_size > 1:
        model = DDP(model, device_ids=[torch.cuda.current_device()] if cuda else None)

    # 4) the training loop
    tokens_per_step = cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum_steps"]
    flops, peak = flops_per_token(raw_model), peak_flops(dev)
    say(f"global batch: {tokens_per_step:,} tokens per step ({world_size} process(es) x {accum_per_rank} "
        f"micro-batch(es) x {cfg['batch_size']} x {cfg['block_size']}); compile: {use_compile}; "
        f"{'bf16 autocast' if bf16 else 'float32'}")
    bar = tqdm(total=cfg["max_iters"], initial=start_step, dynamic_ncols=True, mininterval=0.5, disable=not master)
    step, t_log, t_probe, eval_seconds, eval_total = start_step, time.time(), time.time(), 0.0, 0.0
    try:
        while True:
            if master and (step % cfg["eval_interval"] == 0 or step == cfg["max_iters"]):
                t_eval = time.time()
                losses = estimate_loss(raw_model, eval_sets, cfg["eval_batch_size"])  # float32, uncompiled
                eval_seconds = time.time() - t_eval
                eval_total += eval_seconds
                tqdm.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                log_losses(log_path, step, losses, time.time() - t_start, get_lr(step, cfg))
                if not math.isfinite(losses["val"]):
                    raise UserError(f"the val loss became {losses['val']} at step {step}; the best model so far "
                                    f"is kept in {ckpt_path}; try a smaller --learning_rate")
                if losses["val"] < best_val:
                    best_val = losses["val"]
                    save_checkpoint({
                        "script": SCRIPT, "config": cfg, "chars": "".join(chars), "step": step,
                        "best_val_loss": best_val, "model": raw_model.state_dict(),
                        "optimizer": optimizer.state_dict(),  # the random state is step_seed(seed, step, ...)
                    }, ckpt_path)
            if step >= cfg["max_iters"]:
                break

            # one optimizer step: the global batch's micro-batches, split across the processes
            lr = get_lr(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micros = range(rank * accum_per_rank, (rank + 1) * accum_per_rank)
            seeds = [step_seed(cfg["seed"], step, micro) for micro in micros]
            batches = (
                (s, *(t.pin_memory().to(dev, non_blocking=True) if cuda else t for t in get_batch(
                    train_data, cfg["batch_size"], cfg["block_size"], torch.Generator().manual_seed(s))))
                for s in seeds
            )
            loss = forward_backward(model, batches, autocast, ddp=world_size > 1)
            norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg["grad_clip"] or float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)

            # a time budget fixes max_iters once the step time is known: it is measured over up to 50 steps
            # after the first (which includes compilation), all in the warmup, whose learning rates do
            # not depend on max_iters
            if step == start_step + 1:
                t_probe = time.time()
            probe_steps = max(2, min(50, cfg["warmup_iters"] - 1))
            if cfg["time_budget"] and step == start_step + 1 + probe_steps:
                step_seconds = (time.time() - t_probe) / probe_steps
                left = 0.98 * cfg["time_budget"] - (time.time() - t_start) - 2 * eval_seconds  # a margin for drift
                seconds_per_step = step_seconds + eval_seconds / cfg["eval_interval"]  # evaluations included
                steps = torch.tensor(step + int(left / seconds_per_step), device=dev)
                if world_size > 1:
                    dist.broadcast(steps, src=0)  # every process must stop at the same step
                cfg["max_iters"], cfg["time_budget"] = max(step, int(steps)), 0  # a resumed run keeps these
                bar.total = cfg["max_iters"]
                say(f"\ntime budget: {step_seconds * 1e3:.0f} ms a step, so max_iters = {cfg['max_iters']}")
            elif not cuda and not cfg["time_budget"] and step == start_step + 3 and master:
                step_seconds = (time.time() - t_probe) / 2
                hours = step_seconds * (cfg["max_iters"] - step) / 3600
                if hours > 0.25:
                    tqdm.write(f"on {dev} a step takes {step_seconds:.2f} s, so this run needs about {hours:.1f} h. "
                               f"A recipe that fits a laptop (~10 minutes): python gpt2.py {LAPTOP_RECIPE}")

            if step % cfg["log_interval"] == 0 or step == cfg["max_iters"]:
                loss_value, elapsed = loss.item(), time.time() - t_log
                if not math.isfinite(loss_value):
                    raise UserError(f"the training loss became {loss_value} at step {step}; the best model so far "
                                    f"is kept in {ckpt_path}; try a smaller --learning_rate")
                tokens_per_s = tokens_per_step * cfg["log_interval"] / elapsed
                postfix = {"loss": f"{loss_value:.4f}", "lr": f"{lr:.2e}", "norm": f"{norm.item():.2f}",
                           "tok/s": f"{tokens_per_s:,.0f}"}
                if peak:
                    postfix["mfu"] = f"{100 * flops * tokens_per_s / world_size / peak:.1f}%"
                bar.set_postfix(postfix, refresh=False)
                t_log = time.time()
    except KeyboardInterrupt:
        bar.close()
        if master:
            print(f"\ninterrupted at step {step}; the best model so far is in {ckpt_path}; "
                  f"continue with: python {SCRIPT}.py --resume", file=sys.stderr)
        sys.exit(130)
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"CUDA ran out of memory with --batch_size={cfg['batch_size']}; try a smaller --batch_size "
                        "with more --grad_accum_steps (the same global batch)") from None
    finally:
        bar.close()  # before any error message, so that the message gets a line of its own
    if not master:
        return
    print(f"training took {time.time() - t_start:.1f} s ({eval_total:.1f} s of it evaluating); "
          f"best val loss {best_val:.4f}, saved in {ckpt_path}")
    plot_losses(log_path, os.path.join(cfg["out_dir"], "loss.png"), f"{SCRIPT}.py on {cfg['input_file']}")

    # 5) a sample from the trained model
    print(generate_text(raw_model, cfg, stoi, itos, dev))


def main(argv):
    t_start = time.time()
    overrides = parse_overrides(argv, HYPERPARAMETERS)
    cfg = {**HYPERPARAMETERS, **overrides}
    if cfg["resume"] and not cfg["sample"]:
        checkpoint_cfg = load_checkpoint(os.path.join(cfg["out_dir"], "ckpt.pt"), SCRIPT)["config"]
        cfg = {**HYPERPARAMETERS, **checkpoint_cfg, **overrides}  # the saved run's settings, then the new ones
    check_config(cfg)
    dev = pick_device(cfg["device"])
    if cfg["sample"]:
        print(f"using device: {dev}")
        sample_from_checkpoint(cfg, dev)
        return
    rank, world_size, dev = setup_distributed(dev)
    try:
        if rank == 0:
            print(f"using device: {dev}" + (f" ({world_size} processes)" if world_size > 1 else ""))
        train(cfg, dev, rank, world_size, t_start)
        if world_size > 1:
            dist.barrier()  # leave together: a process that tears down while another still works can abort
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# --- same in every script: entry point ---
if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
# --- end ---
