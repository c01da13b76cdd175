"""Lesson 3: the full GPT-2 architecture (10.8M parameters) and the recipe that trains it fast.

Adds to v2.py: every head in one matmul and one fused kernel, GPT-2's modules, initialisation and weight tying,
AdamW with weight decay, warmup and cosine decay, clipping, accumulation, bf16 or float16 (as the GPU allows) and
torch.compile on CUDA, a key/value cache, texts of any size, finetuning (--init_from), many GPUs, --time_budget.
Run:    python gpt2.py    python gpt2.py --sample --prompt="ROMEO:"    python gpt2.py --help
        torchrun --standalone --nproc_per_node=8 gpt2.py --grad_accum_steps=8 --batch_size=8
Result: val loss 1.4489 on one H200, under 1.47 after 55 s (2026-11-28); laptop recipe: 1.5014 in 590 s, 2 CPU cores.
"""

import errno
import hashlib
import importlib.util
import io
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
n_embd = 384  # width of the token representation (C)
n_head = 6  # attention heads per layer (nh); head_size = n_embd // n_head
n_layer = 6  # transformer blocks
dropout = 0.2  # probability of zeroing an activation during training
# the training recipe
min_lr = 1e-4  # step size at the end of the cosine decay
warmup_iters = 100  # steps of linear warmup from 0 to learning_rate (the peak step size)
weight_decay = 0.1  # AdamW weight decay on matrices and embeddings (not on biases and LayerNorms)
beta1 = 0.9  # AdamW momentum of the gradient
beta2 = 0.99  # AdamW momentum of the squared gradient
grad_clip = 1.0  # clip the gradient's global norm to this (0: no clipping)
grad_accum_steps = 1  # micro-batches per step: the global batch is batch_size * grad_accum_steps sequences
time_budget = 0  # seconds of training: >0 plans max_iters from the measured step time and ends in time (0: off)
compile = True  # torch.compile the model on CUDA from compute capability 8.0 (7.x: only when given), with triton
dtype = "auto"  # training precision: auto (bfloat16 or float16 as the GPU allows), bfloat16, float16 or float32
# evaluation
eval_train_windows = 512  # train windows scored at each evaluation (val scores its whole split)
max_val_windows = 8192  # cap on val windows per evaluation, for large texts (tiny Shakespeare has 435)
eval_batch_size = 128  # windows per forward pass during evaluation
# sampling
prompt = ""  # text the sample continues (empty: start from a newline); \n in it is a newline, \\ a backslash
max_new_tokens = 500  # characters to generate
temperature = 1.0  # sampling temperature: <1 sharper, >1 flatter, 0 always the likeliest character
top_k = 0  # sample only among the k likeliest characters (0: all of them)
sample_file = ""  # also write the sample, as UTF-8, into this file (empty: print it only)
attention_png = ""  # with --sample: also draw the prompt's attention weights, each layer and head, into this PNG
kv_cache = True  # sample with a key/value cache (False: recompute the whole context for every token)
# what to run, on what, and where
sample = False  # --sample: generate from the saved model instead of training
resume = False  # --resume: continue training from the checkpoint in out_dir
init_from = ""  # finetune: a new run starts from the model saved in this folder (its weights and vocabulary)
input_file = "input.txt"  # training text (any UTF-8 file); tiny Shakespeare is downloaded if missing
out_dir = "out/gpt2"  # where the best model and the loss log are written
device = ""  # cuda, mps or cpu; empty picks cuda, then mps, then cpu
seed = 1337  # random seed for the weights, the batches and sampling
log_interval = 10  # steps between updates of the loss on the progress bar
# every name above is a hyperparameter: `python gpt2.py --name=value` overrides it, --help lists them
HYPERPARAMETERS = {k: v for k, v in globals().items() if type(v) in (bool, int, float, str) and not k.startswith("_")}


# the data ("reading and exploring the data", "tokenization, train/val split")
def load_data(cfg, vocab=None):
    """The vocabulary (chars, stoi, itos) and the train and val data. The vocabulary is the text's own characters,
    or vocab, a saved model's, when finetuning it (--init_from): the text may only use characters it has.

    differs from the video: the text is encoded once into a token file that np.memmap reads (load_tokens,
    below the ruler), so that a text of any size trains without being held in memory.
    """
    chars, data = load_tokens_once(cfg["input_file"], cfg["out_dir"], vocab)  # under torchrun, rank 0 writes it
    vocab_size = len(chars)
    check_text(cfg["input_file"], len(data), vocab_size, cfg["block_size"])
    stoi = {ch: i for i, ch in enumerate(chars)}  # string to integer
    itos = {i: ch for i, ch in enumerate(chars)}  # integer to string
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


# the model: GPT-2 ("super quick walkthrough of nanoGPT, batched multi-headed self-attention")
# B=batch, T=time, C=n_embd, nh=n_head, hs=head_size, V=vocab_size
@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256
    n_embd: int = 384
    n_head: int = 6
    n_layer: int = 6
    dropout: float = 0.2


class CausalSelfAttention(nn.Module):
    """Computes what v2.py's heads compute (Head, MultiHeadAttention): all heads in one matmul and one fused kernel.

    differs from v2.py: c_attn holds every head's query, key and value (head h's query is rows h*hs to (h+1)*hs
    of its weight, its key rows C + h*hs.., its value rows 2C + h*hs..), and F.scaled_dot_product_attention
    computes softmax(q @ k^T / sqrt(hs)) with the causal mask, then @ v, without building wei (B, nh, T, T).
    """

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
        if cache is not None:  # sampling: keep this call's keys and values, attend to every cached position too
            k, v = cache.update(layer, k, v)  # (B, nh, S, hs): S = cached positions + T
        S = k.size(2)
        # the new positions see every cached one and each other causally (S == T: the plain causal mask)
        mask = None if S == T or T == 1 else torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)  # (T, S)
        q, k, v = contiguous_on_mps(q, k, v)  # MPS's attention kernel misreads transposed views (see below the ruler)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=S == T)  # (B, nh, T, hs)
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
                keep = block_size if cache is None else max(1, block_size // 2)
                cache = KVCache(self.config, idx.size(0), idx.device, self.transformer.wte.weight.dtype)
                logits, _ = self(idx[:, -keep:], cache=cache)  # (B, T, V)
            else:
                logits, _ = self(idx[:, -1:], cache=cache)  # (B, 1, V): only the newest position
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx


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


def build_model(cfg, vocab_size):
    return GPT(GPTConfig(vocab_size, cfg["block_size"], cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["dropout"]))


# the training recipe: AdamW with weight decay, warmup and cosine decay, gradient accumulation
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


def forward_backward(model, micro_batches, autocast, scaler, ddp=False):
    """Accumulate the gradient of the mean loss over micro-batches; return that mean loss.

    micro_batches yields (seed, x, y); each micro-batch's dropout is seeded by its own seed. In float16 the
    scaler multiplies the loss before backward (a no-op otherwise). Under DistributedDataParallel the
    gradients are averaged across processes on the last micro-batch only.
    """
    micro_batches = list(micro_batches)
    total = 0.0
    for i, (micro_seed, x, y) in enumerate(micro_batches):
        torch.manual_seed(micro_seed)
        last = i == len(micro_batches) - 1
        with (model.no_sync() if ddp and not last else nullcontext()), autocast:
            _, loss = model(x, y)
        scaler.scale(loss / len(micro_batches)).backward()
        total += loss.detach()
    return total / len(micro_batches)


# the training loop
def train(cfg, dev, checkpoint=None, rank=0, world_size=1, pretrained=None, compile_asked=False):
    """Data, GPT-2 and AdamW; then each step: a learning rate, evaluation, micro-batches, clipping, an update.
    checkpoint: the run to resume (--resume); pretrained: the model a new run starts from (--init_from);
    compile_asked: --compile was given on the command line."""
    master = rank == 0  # rank 0 alone prints, evaluates, saves and samples
    autocast, scaler = set_up_precision(cfg["dtype"], dev, master)  # bf16 from compute capability 8.0, float16 on 7.x
    chars, stoi, itos, train_data, val_data = load_data(cfg, model_vocabulary(cfg, checkpoint, pretrained))
    torch.manual_seed(cfg["seed"])
    raw_model = build_model(cfg, len(chars)).to(dev)
    if pretrained is not None:  # finetuning: the pretrained weights; the optimizer and the schedule start afresh
        load_weights(raw_model, pretrained, os.path.join(cfg["init_from"], "ckpt.pt"))
    if master:
        print(f"{sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M parameters")
    optimizer = configure_optimizer(raw_model, cfg, fused=fused_adamw(dev))
    run = Run(cfg, dev, raw_model, optimizer, chars, train_data, val_data, checkpoint, master,
              extra_state={"scaler": scaler})  # resume, save, log, progress
    model = wrap_model(raw_model, cfg, dev, rank, world_size, compile_asked)  # torch.compile on CUDA; DDP, torchrun
    timer = StepTimer(cfg, dev, run, world_size)  # tokens/s, MFU, --time_budget
    skipped = SkippedSteps(scaler, run, dev)  # float16: the updates the scaler skipped
    step = run.start_step
    with run:
        while True:
            lr = get_lr(step, cfg)  # linear warmup, then cosine decay to min_lr
            if master and (step % cfg["eval_interval"] == 0 or step == cfg["max_iters"]):
                losses = estimate_loss(raw_model, run.eval_sets, cfg["eval_batch_size"])  # float32, uncompiled
                run.evaluated(step, losses, lr)  # print and log the losses; save the model if it is the best so far
            if step >= cfg["max_iters"]:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = micro_batches(train_data, cfg, step, rank, world_size, dev)  # this process's share of the batch
            loss = forward_backward(model, batches, autocast, scaler, ddp=world_size > 1)  # gradients of the mean loss
            scaler.unscale_(optimizer)  # float16: the true gradients again, so that clipping sees their true norm
            norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg["grad_clip"] or float("inf"))
            scaler.step(optimizer)  # optimizer.step(); in float16 skipped when a gradient overflowed to inf or nan
            scaler.update()  # float16: halve the scale after an overflow, double it after 2000 steps without one
            optimizer.zero_grad(set_to_none=True)
            run.stepped(step, loss, lr=lr, norm=norm)  # the progress bar: loss, learning rate, gradient norm
            skipped.counted(step, norm)
            timer.stepped(step)
            step += 1
    run.finished()  # how long it took, and the plot of the losses
    if master:
        show_sample(generate_text(raw_model, cfg, stoi, itos, dev), cfg)  # print it (and save it)


# generation: continue a prompt, one sampled character at a time (with a key/value cache)
def generate_text(model, cfg, stoi, itos, dev):
    generator = torch.Generator(sampling_device(dev)).manual_seed(cfg["seed"])
    context = torch.tensor([prompt_ids(cfg["prompt"], stoi)], dtype=torch.long, device=dev)  # (1, T)
    model.eval()
    out = model.generate(context, cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], generator,
                         use_cache=cfg["kv_cache"])  # (1, T+new)
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
SCRIPT = "gpt2"
MODEL_KEYS = ("block_size", "n_embd", "n_head", "n_layer")  # the settings a checkpoint's model is built from
LAPTOP_RECIPE = ("--n_layer=4 --n_head=4 --n_embd=128 --block_size=128 --batch_size=16 --dropout=0.0 "
                 "--learning_rate=2e-3 --min_lr=2e-4 --eval_interval=1000 --time_budget=600")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core peak, for MFU


def main(argv):
    overrides = parse_command_line(argv, HYPERPARAMETERS)
    cfg = {**HYPERPARAMETERS, **overrides}
    check_combinations(cfg, overrides)
    checkpoint = pretrained = None
    if (cfg["sample"] or cfg["resume"]) and overrides.get("init_from"):
        raise UserError("--init_from starts a new run from a saved model, so it cannot go with --resume or --sample; "
                        "a finetuning run resumes and samples with its own --out_dir")
    if cfg["sample"] or cfg["resume"]:  # the saved model's settings: see saved_settings
        checkpoint = load_checkpoint(cfg["out_dir"], SCRIPT, cfg)
        cfg = saved_settings(cfg, overrides, checkpoint)
        cfg = budget_at_resume(cfg, overrides, checkpoint["step"])
    elif cfg["init_from"]:
        cfg, pretrained = load_pretrained(cfg, overrides)
    check_config(cfg)
    dev = pick_device(cfg["device"])
    check_memory(cfg, dev)
    if cfg["sample"]:
        print(f"using device: {dev}")
        if cfg["attention_png"]:
            check_attention_png()
        model = sample_from_checkpoint(cfg, dev, checkpoint)
        if cfg["attention_png"]:
            draw_attention(model, cfg, checkpoint["chars"], dev)
        return
    make_folder(cfg["out_dir"], "out_dir")
    rank, world_size, dev = setup_distributed(dev)
    try:
        if cfg["grad_accum_steps"] % world_size:
            raise UserError(f"--grad_accum_steps={cfg['grad_accum_steps']} must be divisible by the number of "
                            f"processes ({world_size}), so that the global batch stays the same")
        if rank == 0:
            print(f"using device: {dev}" + (f" ({world_size} processes)" if world_size > 1 else ""))
        train(cfg, dev, checkpoint, rank, world_size, pretrained, compile_asked="compile" in overrides)
        if world_size > 1:
            dist.barrier()  # leave together: a process that tears down while another still works can abort
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def load_pretrained(cfg, overrides):
    """--init_from: (the settings, the checkpoint) of a new run that starts from a saved model. Its model's shape is
    the saved one, as with --resume; everything else is this run's. Its folder must not be out_dir, so that the
    pretrained model is never overwritten."""
    source = cfg["init_from"]
    if os.path.realpath(source) == os.path.realpath(cfg["out_dir"]):
        raise UserError(f"--out_dir={cfg['out_dir']} is the folder of --init_from: the new run would overwrite the "
                        "pretrained model; choose another --out_dir")
    pretrained = load_checkpoint(source, SCRIPT, option="init_from")
    return {**cfg, **saved_model_settings(overrides, pretrained["config"], source, "init_from")}, pretrained


def model_vocabulary(cfg, checkpoint, pretrained):
    """The vocabulary a run must encode its text with: when finetuning (--init_from, and its resumption), the
    model's characters; otherwise None, and the text's own characters make the vocabulary."""
    return (checkpoint or pretrained)["chars"] if cfg["init_from"] else None


def budget_at_resume(cfg, overrides, saved_step):
    """--resume: a --time_budget given again means that many more seconds of training, planned afresh from the
    saved step; without one, the run keeps the max_iters its budget planned."""
    if not overrides.get("time_budget"):
        return {**cfg, "time_budget": 0}
    return {**cfg, "max_iters": max(cfg["max_iters"], saved_step + HYPERPARAMETERS["max_iters"])}  # until planned


def setup_distributed(dev):
    """Under torchrun (RANK and WORLD_SIZE set): join the process group; returns (rank, world_size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, dev
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if dev == "cuda":
        dev = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(dev)
    backend = distributed_backend(dev)
    dist.init_process_group(backend=backend)
    if rank == 0:
        print(f"process group: {world_size} processes, backend {backend}")
    return rank, world_size, dev


def distributed_backend(dev):
    """nccl for CUDA where this torch has it (Linux builds); gloo otherwise: the CPU, and CUDA on Windows, whose
    torch ships without NCCL."""
    return "nccl" if dev.startswith("cuda") and dist.is_nccl_available() else "gloo"


DTYPES = ("auto", "bfloat16", "float16", "float32")
PRECISION_NAMES = {"bfloat16": "bf16 autocast", "float16": "float16 autocast + gradient scaler", "float32": "float32"}


def choose_precision(requested, dev):
    """(dtype, why): the precision to train in, from --dtype and what the device reports.

    auto: bf16 from compute capability 8.0 (A100, RTX 30xx and later); float16 with a gradient scaler on 7.x
    (V100, Colab's T4, RTX 20xx, GTX 16xx), which have fast float16 but emulate bf16, slowly, and whose
    compiled bf16 kernels fail to build (Triton needs sm_80 for bf16); float32 below 7.0, on MPS and on the CPU.
    torch.cuda.is_bf16_supported() is not asked: it also says yes where bf16 is only emulated.
    An explicit dtype is used on any device that runs it, the CPU included; any other is a UserError.
    """
    if requested not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {requested!r}")
    kind = torch.device(dev).type
    if kind == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        where = f"compute capability {major}.{minor}"
        runs = ("bfloat16", "float16", "float32") if major >= 8 else ("float16", "float32")
        if major >= 8:
            auto = ("bfloat16", f"{where} has bf16")
        elif major == 7:
            auto = ("float16", f"{where} has no bf16")
        else:
            auto = ("float32", f"{where} has no float16 tensor cores")
    else:
        where = kind
        runs = ("float32",) if kind == "mps" else ("bfloat16", "float16", "float32")  # MPS: see contiguous_on_mps
        auto = ("float32", f"auto trains in float32 on {kind}")
    if requested == "auto":
        return auto
    if requested not in runs:
        raise UserError(f"--dtype={requested} cannot train on this device ({where}); it can use "
                        f"{', '.join(runs)}, or leave --dtype out (auto picks {auto[0]})")
    return requested, f"--dtype={requested}"


def set_up_precision(requested, dev, master=True):
    """The precision to train in, chosen and applied: (autocast context, gradient scaler). Prints the choice and why."""
    dtype, why = choose_precision(requested, dev)
    allow_tf32(dev)
    if master:
        print(f"precision: {PRECISION_NAMES[dtype]} ({why})")
    return autocast_context(dtype, dev), gradient_scaler(dtype, dev)


def allow_tf32(dev):
    """On CUDA, float32 matmuls (and the parts autocast keeps in float32) run on tensor cores in TF32."""
    if torch.device(dev).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast_context(dtype, dev):
    """The context the forward pass runs in: autocast to bfloat16 or float16; float32 needs none."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(torch.device(dev).type, dtype=getattr(torch, dtype))


def gradient_scaler(dtype, dev):
    """A gradient scaler that is on for float16 only: its smallest numbers are about 6e-8, so small gradients would
    round to 0; the loss is multiplied before backward and the gradients divided back. Off, it changes nothing."""
    return torch.amp.GradScaler(torch.device(dev).type, enabled=dtype == "float16")


def fused_adamw(dev):
    """Whether AdamW updates every parameter in one fused kernel: on CUDA and the CPU; MPS runs the plain loop."""
    return torch.device(dev).type != "mps"


COMPILE_MIN_CAPABILITY = (8, 0)  # Triton 3.3+ (torch >= 2.7) fully supports 8.0 and above


def choose_compile(requested, dev, asked=False):
    """(use torch.compile, why), from --compile and what the device reports.

    On CUDA with triton installed: by default from compute capability 8.0 (A100 and later). On 7.x (V100, T4,
    RTX 20xx) only when --compile is given on the command line (asked): Triton deprecated its tensor-core matmuls
    below 8.0 (Triton PR 5066), and its float16 kernels can abort in LLVM on 7.5 (Triton issue 6698). Never below
    7.0, on MPS or on the CPU: there the model runs as written.
    """
    if not requested:
        return False, "--compile=False"
    if torch.device(dev).type != "cuda":
        return False, f"not on CUDA: {torch.device(dev).type} runs the model as written"
    major, minor = torch.cuda.get_device_capability(dev)
    where = f"compute capability {major}.{minor}"
    if major < 7:
        return False, f"{where} is below the 7.0 that Triton needs"
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if (major, minor) >= COMPILE_MIN_CAPABILITY:
        return True, f"{where}, triton"
    if asked:
        return True, f"{where}, triton: --compile given, although Triton fully supports only 8.0 and above"
    return False, f"{where}: Triton fully supports only 8.0 and above; add --compile to try it"


def contiguous_on_mps(*tensors):
    """The tensors, laid out in memory order on MPS; elsewhere as they are (the CUDA and CPU kernels read any layout).

    On Apple Silicon, F.scaled_dot_product_attention can return wrong values, silently, for transposed q, k, v with
    head_size 64 or more, as the default model has (PyTorch issues 181133 and 163597). MPS also trains in float32
    only (choose_precision): in float16 and bfloat16 its causal attention can let positions see the future (issue
    195910), and autocast and the gradient scaler on MPS need a recent torch."""
    if tensors[0].device.type == "mps":
        return tuple(t.contiguous() for t in tensors)
    return tensors


def wrap_model(raw_model, cfg, dev, rank, world_size, compile_asked=False):
    """torch.compile where it can work (choose_compile), DistributedDataParallel under torchrun; says which."""
    use_compile, why = choose_compile(cfg["compile"], dev, compile_asked)
    model = torch.compile(raw_model) if use_compile else raw_model
    if world_size > 1:
        model = DDP(model, device_ids=[torch.cuda.current_device()] if dev.startswith("cuda") else None)
    if rank == 0:
        tokens = cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum_steps"]
        print(f"global batch: {tokens:,} tokens per step ({world_size} process(es) x "
              f"{cfg['grad_accum_steps'] // world_size} micro-batch(es) x {cfg['batch_size']} x {cfg['block_size']}); "
              f"compile: {'on' if use_compile else 'off'} ({why})")
    return model


def step_seed(seed, step, micro):
    """The seed of one micro-batch of one step (micro counts across all processes).

    Batches and dropout masks depend only on (seed, step, micro), so a run draws the same numbers
    on 1 or N processes, and a resumed run draws what the uninterrupted run would have drawn. Taken modulo 2**64,
    so that every --seed gives a seed torch accepts (0 to 2**64 - 1).
    """
    return ((seed * 1_000_003 + step) * 1_000_003 + micro) % 2**64


def micro_batches(data, cfg, step, rank, world_size, dev):
    """This process's share of the step's grad_accum_steps micro-batches: (seed, x, y), each from its own seed."""
    per_rank = cfg["grad_accum_steps"] // world_size
    batches = []
    for micro in range(rank * per_rank, (rank + 1) * per_rank):
        seed = step_seed(cfg["seed"], step, micro)
        x, y = get_batch(data, cfg["batch_size"], cfg["block_size"], torch.Generator().manual_seed(seed))
        if dev.startswith("cuda"):
            x, y = x.pin_memory().to(dev, non_blocking=True), y.pin_memory().to(dev, non_blocking=True)
        batches.append((seed, x, y))
    return batches


class StepTimer:
    """Times the training steps (evaluations left out): shows tokens/s and MFU on the progress bar; with
    --time_budget, plans max_iters from the step time at every measurement, so that a run on a machine that slows
    down still ends in time; without one, on a CPU or MPS, says once when the run would take hours, and gives the
    laptop recipe.

    A measurement covers the steps since the previous one: the first 2 after the first step (which compiles), then
    log_interval steps or 1 s, whichever comes first (by steps only under torchrun, so that every process plans at
    the same step), and always at the planned last step, so that the decision to stop is made on fresh numbers.
    """

    def __init__(self, cfg, dev, run, world_size):
        self.cfg, self.dev, self.run, self.world_size = cfg, dev, run, world_size
        self.tokens_per_step = cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum_steps"]
        self.flops, self.peak = flops_per_token(run.model), peak_flops(dev)
        self.seconds_per_step = None  # a moving average of the measured step times
        self.latest = self.previous = None  # the step times of the last two measurements
        self.mark = None  # (time, seconds spent evaluating, steps done) where the current measurement started

    def stepped(self, step):
        now, evaluating, done = time.time(), self.run.eval_seconds, step + 1
        if self.mark is None:  # the first step compiles the model: measure from its end
            self.mark = (now, evaluating, done)
            return
        t0, e0, d0 = self.mark
        steps, seconds = done - d0, (now - t0) - (evaluating - e0)
        if not self.due(steps, seconds, done):
            return
        self.mark = (now, evaluating, done)
        self.previous, self.latest = self.latest, seconds / steps
        first = self.seconds_per_step is None
        self.seconds_per_step = self.latest if first else 0.8 * self.seconds_per_step + 0.2 * self.latest
        self.show(self.latest)
        if self.cfg["time_budget"]:
            self.plan(done, now, first)
        elif first and not self.dev.startswith("cuda") and self.run.master:
            notice = laptop_notice(self.dev, self.latest, self.cfg["max_iters"] - done)
            if notice:
                tqdm.write(notice)

    def due(self, steps, seconds, done):
        """Whether the steps since the last measurement make a new one."""
        if done >= self.cfg["max_iters"]:
            return True
        if self.seconds_per_step is None:
            return steps >= 2
        return steps >= self.cfg["log_interval"] or (self.world_size == 1 and seconds >= 1.0)

    def show(self, seconds_per_step):
        """tokens/s and, on a GPU whose peak we know, MFU on the progress bar."""
        tokens_per_second = self.tokens_per_step / seconds_per_step
        self.run.postfix["tok/s"] = f"{tokens_per_second:,.0f}"
        if self.peak:  # model FLOPs utilisation: the share of the GPU's peak that the model's arithmetic uses
            self.run.postfix["mfu"] = f"{100 * self.flops * tokens_per_second / self.world_size / self.peak:.1f}%"

    def plan(self, done, now, first):
        """max_iters such that the steps left, the evaluations among them and the last one end within the budget.
        Planned from the slower of the moving average and the latest measurement; but one slow measurement alone
        never ends the run: while the time left fits a step at the faster of the last two, one more is taken."""
        budget, run = self.cfg["time_budget"], self.run
        evaluating = run.last_eval_seconds / self.cfg["eval_interval"]
        left = budget - (now - run.t_start) - 2 * run.last_eval_seconds - 0.02 * budget  # margins: the last one, drift
        steps_left = max(0, int(left / (max(self.seconds_per_step, self.latest) + evaluating)))
        if steps_left == 0 and left >= min(self.latest, self.previous or self.latest) + evaluating:
            steps_left = 1
        max_iters = torch.tensor(done + steps_left, device=self.dev)
        if self.world_size > 1:
            dist.broadcast(max_iters, src=0)  # every process must stop at the same step
        self.cfg["max_iters"] = run.bar.total = int(max_iters)
        if first and run.master:
            tqdm.write(f"time budget: {self.seconds_per_step * 1e3:.0f} ms a step, so max_iters = {int(max_iters)}")


class SkippedSteps:
    """In float16, the steps whose update the gradient scaler skipped (a gradient overflowed to inf or nan), on the
    progress bar. Counted on the device, so that no step waits for the GPU; read every log_interval steps."""

    def __init__(self, scaler, run, dev):
        self.scaler, self.run = scaler, run
        self.count = torch.zeros((), dtype=torch.long, device=dev)

    def counted(self, step, norm):
        if not self.scaler.is_enabled():
            return
        self.count += (~torch.isfinite(norm)).long()
        if step % self.run.cfg["log_interval"] == 0 and int(self.count):  # next to the loss: a narrow terminal
            shown = {name: value for name, value in self.run.postfix.items() if name not in ("loss", "skipped")}
            self.run.postfix = {"loss": self.run.postfix.get("loss", ""), "skipped": int(self.count), **shown}


def laptop_notice(dev, seconds_per_step, steps_left):
    """On a CPU or MPS, when the run would take over a quarter of an hour: how long, and the laptop recipe."""
    hours = seconds_per_step * steps_left / 3600
    if hours > 0.25:
        return (f"on {dev} a step takes {seconds_per_step:.2f} s, so this run needs about {hours:.1f} h. "
                f"A recipe that fits a laptop (~10 minutes): python gpt2.py {LAPTOP_RECIPE}")
    return None


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


def load_tokens_once(path, out_dir, vocab=None):
    """load_tokens; under torchrun rank 0 writes the token file first, and its error stops every process."""
    if not dist.is_initialized():
        return load_tokens(path, out_dir, vocab=vocab)
    failure = None
    if dist.get_rank() == 0:
        try:
            load_tokens(path, out_dir, vocab=vocab)
        except UserError as error:
            failure = str(error)
    message = [failure]
    dist.broadcast_object_list(message, src=0)  # so that every process stops with rank 0's error
    if message[0]:
        raise UserError(message[0])
    return load_tokens(path, out_dir, vocab=vocab)


def token_cache_paths(path, out_dir, vocab=None):
    """The token file and its description, next to the text (or in out_dir if that folder is read-only). Their names
    carry a short hash of the vocabulary (the text's own, or vocab, a saved model's), so that runs with different
    vocabularies keep a file each and never read each other's ids."""
    folder = os.path.dirname(os.path.abspath(path))
    base = path if os.access(folder, os.W_OK) else os.path.join(out_dir, os.path.basename(path))
    key = hashlib.sha256((vocab or "").encode()).hexdigest()[:8]  # "": the text's own characters
    return f"{base}.{key}.tokens.bin", f"{base}.{key}.tokens.json"


def text_checksum(path, chunk_bytes=1 << 24):
    """sha256 of the text's bytes: the token file is fresh only for this exact content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def load_tokens(path, out_dir, chunk_chars=1 << 22, vocab=None):
    """Vocabulary and token ids of a text of any size, without holding the text in memory.

    The first run streams the text twice (once for the vocabulary, once to encode it) into a flat
    binary token file, one byte per character when the vocabulary fits (else two); later runs map
    that file with np.memmap, so only the windows a batch needs are read. The file is rebuilt when
    the text's content changes (its checksum), or when an id in it is not in the vocabulary (a damaged
    file). The vocabulary is the text's own, or vocab, a saved model's (--init_from).
    """
    check_input_file(path)
    bin_path, meta_path = token_cache_paths(path, out_dir, vocab)
    source = {"size": os.path.getsize(path), "sha256": text_checksum(path)}
    try:  # the token file is reused when its description matches the text and the file has every token
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        usable = meta["source"] == source and meta["chars"] == (vocab or meta["text_chars"]) and os.path.getsize(
            bin_path) == meta["n_tokens"] * np.dtype(meta["dtype"]).itemsize
    except (OSError, ValueError, KeyError, TypeError):
        usable = False
    if usable and not ids_in_vocabulary(bin_path, meta):
        print(f"{bin_path} holds ids outside its vocabulary (a damaged file): encoding {path} again")
        usable = False
    if not usable:
        meta = encode_to_file(path, bin_path, meta_path, source, chunk_chars, vocab)
    data = np.memmap(bin_path, dtype=meta["dtype"], mode="r") if meta["n_tokens"] else np.zeros(0, np.uint8)
    return meta["chars"], data


def ids_in_vocabulary(bin_path, meta, chunk_tokens=1 << 24):
    """Whether every id in the token file is below the vocabulary size (an id beyond it would index past the
    embedding table)."""
    if not meta["n_tokens"]:
        return True
    data = np.memmap(bin_path, dtype=meta["dtype"], mode="r")
    return all(int(data[i:i + chunk_tokens].max()) < len(meta["chars"]) for i in range(0, len(data), chunk_tokens))


def encode_to_file(path, bin_path, meta_path, source, chunk_chars, vocab=None):
    """Stream the text into the token file, then its description; each written atomically (write_file).
    vocab: a saved model's characters, sorted, to encode with instead of the text's own."""
    print(f"encoding {path} into {bin_path}")
    try:
        chars = set()
        with open(path, encoding="utf-8") as f:
            while chunk := f.read(chunk_chars):
                chars.update(chunk)
    except UnicodeDecodeError as error:
        raise UserError(f"input file {path} is not UTF-8 text ({error.reason}); convert it to UTF-8 first") from None
    text_chars = sorted(chars)
    missing = sorted(set(text_chars) - set(vocab or text_chars))
    if missing:
        raise UserError(f"{path} has {len(missing)} character(s) that the model of --init_from has never seen: "
                        f"{''.join(missing)!r}; finetune on a text without them, or pretrain on one that has them")
    chars = sorted(vocab or text_chars)
    if len(chars) > 65535:
        raise UserError(f"{path} has {len(chars)} distinct characters; at most 65535 are supported")
    dtype = "uint8" if len(chars) <= 256 else "uint16"
    codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted, so id = rank of the codepoint

    def token_chunks():
        with open(path, encoding="utf-8") as f:
            while chunk := f.read(chunk_chars):
                codes = np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)
                yield np.searchsorted(codepoints, codes).astype(dtype).tobytes()

    write_file(bin_path, token_chunks())
    n_tokens = os.path.getsize(bin_path) // np.dtype(dtype).itemsize
    meta = {"source": source, "chars": "".join(chars), "text_chars": "".join(text_chars), "dtype": dtype,
            "n_tokens": n_tokens}
    write_file(meta_path, [json.dumps(meta).encode()])
    return meta


def attention_weights(model, idx):
    """The attention weights (n_layer, n_head, T, T) of one sequence idx (1, T). The fused kernel returns none, so
    they are computed as v2.py's heads compute wei: from c_attn's q and k, scaled, masked, softmaxed."""
    inputs = []  # what each layer's attention receives: ln_1's output
    hooks = [block.attn.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
             for block in model.transformer.h]
    try:
        model.eval()
        with torch.no_grad():
            model(idx)
            weights = []
            for block, x in zip(model.transformer.h, inputs, strict=True):
                B, T, C = x.shape  # (1, T, C)
                nh = block.attn.n_head
                q, k, _ = block.attn.c_attn(x).split(C, dim=2)  # 2 x (1, T, C)
                q = q.view(B, T, nh, C // nh).transpose(1, 2)  # (1, nh, T, hs)
                k = k.view(B, T, nh, C // nh).transpose(1, 2)  # (1, nh, T, hs)
                wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (1, nh, T, hs) @ (1, nh, hs, T) -> (1, nh, T, T)
                causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
                weights.append(F.softmax(wei.masked_fill(~causal, float("-inf")), dim=-1)[0])  # (nh, T, T)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(weights)  # (n_layer, nh, T, T)


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
