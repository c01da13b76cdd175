"""Lesson 3: the full GPT-2 architecture (10.8M parameters) and the recipe that trains it fast.

Adds to v2.py: every head in one matmul and one fused kernel, GPT-2's modules, initialisation and weight tying,
AdamW with weight decay, warmup and cosine decay, clipping, accumulation, bf16 or float16 (as the GPU allows) and
torch.compile on CUDA, a key/value cache, texts of any size, finetuning (--init_from), many GPUs, --time_budget.
Run:    python gpt2.py    python gpt2.py --sample --prompt="ROMEO:"    python gpt2.py --help
        torchrun --standalone --nproc_per_node=8 gpt2.py --grad_accum_steps=8 --batch_size=8
Result: val loss 1.4489 on one H200, under 1.47 after 55 s (2026-11-28); laptop recipe: 1.5014 in 590 s, 2 CPU cores.
"""

import hashlib
import importlib.util
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import plumbing  # not in the video: the command line, checks, files, saving and resuming, plots (plumbing.py)

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
# what plumbing.py needs to know of this script; model_keys: the settings a saved model's shape is built from
SCRIPT = plumbing.Script("gpt2", __file__, HYPERPARAMETERS, model_keys=("block_size", "n_embd", "n_head", "n_layer"))


# the data ("reading and exploring the data", "tokenization, train/val split")
def load_data(cfg, vocab=None):
    """The vocabulary (chars, stoi, itos) and the train and val data. The vocabulary is the text's own characters,
    or vocab, a saved model's, when finetuning it (--init_from): the text may only use characters it has.

    differs from the video: the text is encoded once into a token file that np.memmap reads (load_tokens,
    further down), so that a text of any size trains without being held in memory.
    """
    chars, data = load_tokens_once(cfg["input_file"], cfg["out_dir"], vocab)  # under torchrun, rank 0 writes it
    vocab_size = len(chars)
    plumbing.check_text(cfg["input_file"], len(data), vocab_size, cfg["block_size"])
    stoi = {ch: i for i, ch in enumerate(chars)}  # string to integer
    itos = {i: ch for i, ch in enumerate(chars)}  # integer to string
    n = int(0.9 * len(data))  # the first 90% trains, the rest validates
    return chars, stoi, itos, data[:n], data[n:]


def encode(s, stoi):
    """String -> list of integers, one per character ("tokenization" in the video)."""
    unknown = sorted(set(s) - stoi.keys())
    if unknown:
        raise plumbing.UserError(f"characters not in the model's vocabulary: {''.join(unknown)!r}; use only "
                                 "characters that occur in the training text")
    return [stoi[c] for c in s]


def decode(ids, itos):
    """List of integers -> string."""
    return "".join(itos[i] for i in ids)


def get_batch(data, batch_size, block_size, generator):
    """batch_size random chunks of the data ("data loader: batches of chunks of data"): inputs x (B, T), and
    targets y, the same chunks one character on."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()  # B random starts
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])  # (B, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])  # (B, T)
    return x, y


def eval_windows(data, block_size, max_windows, dev):
    """The windows estimate_loss scores, inputs x and targets y (N, T) on dev: every non-overlapping window of the
    data, or max_windows of them spread evenly (0: every one)."""
    n_windows = (len(data) - 1) // block_size
    count = min(n_windows, max_windows) if max_windows else n_windows
    ix = [(i * n_windows // count) * block_size for i in range(count)]  # N start offsets
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])  # (N, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])  # (N, T)
    return x.to(dev), y.to(dev)


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
        q, k, v = contiguous_on_mps(q, k, v)  # MPS's attention kernel misreads transposed views (see below)
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
        plumbing.load_weights(SCRIPT, raw_model, pretrained, os.path.join(cfg["init_from"], "ckpt.pt"))
    if master:
        print(f"{sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M parameters")
    optimizer = configure_optimizer(raw_model, cfg, fused=fused_adamw(dev))
    # the windows estimate_loss scores: a fixed sample of the train split, the val split whole (to max_val_windows)
    eval_sets = {"train": eval_windows(train_data, cfg["block_size"], cfg["eval_train_windows"], dev),
                 "val": eval_windows(val_data, cfg["block_size"], cfg["max_val_windows"], dev)}
    # not in the video: resuming, saving the best model, the loss log and the progress bar (plumbing.py)
    run = plumbing.Run(SCRIPT, cfg, raw_model, optimizer, chars, checkpoint, master, extra_state={"scaler": scaler})
    model = wrap_model(raw_model, cfg, dev, rank, world_size, compile_asked)  # torch.compile on CUDA; DDP, torchrun
    timer = StepTimer(cfg, dev, run, world_size)  # tokens/s, MFU, --time_budget
    skipped = SkippedSteps(scaler, run, dev)  # float16: the updates the scaler skipped
    step = run.start_step
    with run:
        timer.say_if_hours(autocast)  # on a CPU or MPS, at once: a run of hours says so, with the laptop recipe
        while True:
            lr = get_lr(step, cfg)  # linear warmup, then cosine decay to min_lr
            if master and (step % cfg["eval_interval"] == 0 or step == cfg["max_iters"]):
                losses = estimate_loss(raw_model, eval_sets, cfg["eval_batch_size"])  # float32, uncompiled
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
        plumbing.show_sample(generate_text(raw_model, cfg, stoi, itos, dev), cfg)  # print it (and save it)


# generation: continue a prompt, one sampled character at a time (with a key/value cache)
def generate_text(model, cfg, stoi, itos, dev):
    generator = torch.Generator(plumbing.sampling_device(dev)).manual_seed(cfg["seed"])
    prompt = plumbing.prompt_text(cfg["prompt"], stoi)  # --prompt, or a newline as in the video
    context = torch.tensor([encode(prompt, stoi)], dtype=torch.long, device=dev)  # (1, T)
    model.eval()
    out = model.generate(context, cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], generator,
                         use_cache=cfg["kv_cache"])  # (1, T+new)
    return decode(out[0].tolist(), itos)


def sample_next(logits, temperature, top_k, generator):
    """The next token id from the last position's logits (B, V) -> (B, 1)."""
    if logits.isnan().any():  # no probability comes out of nan: the weights are damaged (a run that diverged)
        raise plumbing.UserError("the model's output is nan (not a number): its weights are damaged; train it again")
    if temperature == 0 or (logits / temperature).isinf().any():  # 0, or too small to divide by: no randomness
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1): the likeliest token
    logits = logits / temperature  # (B, V): <1 sharper, >1 flatter
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k): top_k is clamped to the vocabulary
        logits[logits < v[:, [-1]]] = -float("inf")  # (B, V)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    probs = probs.to(plumbing.sampling_device(probs.device))  # (B, V): on MPS the draw is made on the CPU
    idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
    return idx_next.to(logits.device)  # (B, 1): on the model's device


# the command line (plumbing.py reads and checks it; a mistake is one line, not a traceback)
def main(argv):
    cfg, overrides, checkpoint = plumbing.settings(SCRIPT, argv)  # --sample or --resume: the saved model's settings
    pretrained = None
    if checkpoint is not None:
        cfg = budget_at_resume(cfg, overrides, checkpoint["step"])
    elif cfg["init_from"]:
        cfg, pretrained = load_pretrained(cfg, overrides)  # finetuning: the saved model's shape and weights
    plumbing.check_config(cfg)  # every setting and every path, before any work
    dev = cfg["device"]  # --device, or the best this machine has: CUDA (an NVIDIA GPU), MPS (Apple Silicon), the CPU
    dev = dev or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    plumbing.check_memory(cfg, dev, build_model)  # a model too large for the device is refused now
    if cfg["sample"]:
        print(f"using device: {dev}")
        model = sample_saved_model(cfg, dev, checkpoint)
        if cfg["attention_png"]:
            plumbing.draw_attention(SCRIPT, attention_weights, model, cfg, checkpoint["chars"], dev)
        return
    rank, world_size, dev = setup_distributed(dev)
    try:
        if cfg["grad_accum_steps"] % world_size:
            raise plumbing.UserError(f"--grad_accum_steps={cfg['grad_accum_steps']} must be divisible by the number "
                                     f"of processes ({world_size}), so that the global batch stays the same")
        if rank == 0:
            print(f"using device: {dev}" + (f" ({world_size} processes)" if world_size > 1 else ""))
        train(cfg, dev, checkpoint, rank, world_size, pretrained, compile_asked="compile" in overrides)
        if world_size > 1:
            dist.barrier()  # leave together: a process that tears down while another still works can abort
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def sample_saved_model(cfg, dev, checkpoint):
    """--sample: the saved model continues the prompt, with the vocabulary it was trained on; returns the model."""
    chars = checkpoint["chars"]
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    model = build_model(cfg, len(chars)).to(dev)
    plumbing.load_weights(SCRIPT, model, checkpoint, os.path.join(cfg["out_dir"], "ckpt.pt"))
    plumbing.show_sample(generate_text(model, cfg, stoi, itos, dev), cfg)  # print it (and save it)
    return model


# gpt2.py's own engineering, below its lesson: finetuning, many GPUs, precision, compile, the time budget, large texts
LAPTOP_RECIPE = ("--n_layer=4 --n_head=4 --n_embd=128 --block_size=128 --batch_size=16 --dropout=0.0 "
                 "--learning_rate=2e-3 --min_lr=2e-4 --eval_interval=1000 --time_budget=600")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core peak, for MFU


def load_pretrained(cfg, overrides):
    """--init_from: (the settings, the checkpoint) of a new run that starts from a saved model. Its model's shape is
    the saved one, as with --resume; everything else is this run's. Its folder must not be out_dir, so that the
    pretrained model is never overwritten."""
    source = cfg["init_from"]
    if os.path.realpath(source) == os.path.realpath(cfg["out_dir"]):
        raise plumbing.UserError(f"--out_dir={cfg['out_dir']} is the folder of --init_from: the new run would "
                                 "overwrite the pretrained model; choose another --out_dir")
    pretrained = plumbing.load_checkpoint(SCRIPT, source, option="init_from")
    shape = plumbing.saved_model_settings(SCRIPT, overrides, pretrained["config"], source, "init_from")
    return {**cfg, **shape}, pretrained


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
        raise plumbing.UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {requested!r}")
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
        raise plumbing.UserError(f"--dtype={requested} cannot train on this device ({where}); it can use "
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
    down still ends in time; without one, on a CPU or MPS, says at once (before the first evaluation, from a step
    timed on two sequences) when the run would take hours, and gives the laptop recipe.

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
        self.eval_seen = self.eval_step = None  # the last evaluation's seconds, and the step time when it was made
        self.mark = None  # (time, seconds spent evaluating, steps done) where the current measurement started

    def say_if_hours(self, autocast):
        """On a CPU or MPS without --time_budget, before the first evaluation: the laptop notice, if it applies."""
        if self.run.master and not self.cfg["time_budget"] and not self.dev.startswith("cuda"):
            notice = laptop_notice(self.dev, self.time_a_step(autocast), self.cfg["max_iters"] - self.run.start_step)
            if notice:
                tqdm.write(notice)

    def time_a_step(self, autocast):
        """A training step's seconds, from a forward and backward pass on two sequences (in eval mode, so that no
        dropout is drawn), scaled to the step's sequences."""
        x = torch.zeros(2, self.cfg["block_size"], dtype=torch.long, device=self.dev)
        model, start = self.run.model.eval(), time.time()
        with autocast:
            _, loss = model(x, x)
        loss.backward()
        loss.detach().item()  # waits for the device (MPS runs ahead of Python)
        seconds = (time.time() - start) * self.cfg["batch_size"] * self.cfg["grad_accum_steps"] / 2
        model.zero_grad(set_to_none=True)
        model.train()
        return seconds

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
        postfix = self.run.postfix
        postfix["tok/s"] = f"{tokens_per_second:,.0f}"
        if self.peak:  # model FLOPs utilisation: the share of the GPU's peak that the model's arithmetic uses
            postfix["mfu"] = f"{100 * self.flops * tokens_per_second / self.world_size / self.peak:.1f}%"

    def plan(self, done, now, first):
        """max_iters such that the steps left, the evaluations among them and the last one end within the budget.
        Planned from the slower of the moving average and the latest measurement; but one slow measurement alone
        never ends the run: while the time left fits a step at the faster of the last two, one more is taken."""
        budget, run, step = self.cfg["time_budget"], self.run, max(self.seconds_per_step, self.latest)
        if run.last_eval_seconds != self.eval_seen:  # a new evaluation: the step time of its day
            self.eval_seen, self.eval_step = run.last_eval_seconds, self.latest
        # the last evaluation takes what the last one took; on a machine slower since, up to twice that
        last_evaluation = run.last_eval_seconds * min(2.0, max(1.0, step / self.eval_step))
        evaluating = last_evaluation / self.cfg["eval_interval"]
        left = budget - (now - run.start) - last_evaluation - 0.02 * budget  # margins: the last evaluation, drift
        steps_left = max(0, int(left / (step + evaluating)))
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
            run = self.run
            shown = {name: value for name, value in run.postfix.items() if name not in ("loss", "skipped")}
            run.postfix = {"loss": run.postfix.get("loss", ""), "skipped": int(self.count), **shown}


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
        except plumbing.UserError as error:
            failure = str(error)
    message = [failure]
    dist.broadcast_object_list(message, src=0)  # so that every process stops with rank 0's error
    if message[0]:
        raise plumbing.UserError(message[0])
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
    path = plumbing.check_input_file(path)  # (the default input.txt: the one beside the scripts)
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
        raise plumbing.UserError(f"input file {path} is not UTF-8 text ({error.reason}); convert it to UTF-8 "
                                 "first") from None
    text_chars = sorted(chars)
    missing = sorted(set(text_chars) - set(vocab or text_chars))
    if missing:
        raise plumbing.UserError(f"{path} has {len(missing)} character(s) that the model of --init_from has never "
                                 f"seen: {''.join(missing)!r}; finetune on a text without them, or pretrain on one "
                                 "that has them")
    chars = sorted(vocab or text_chars)
    if len(chars) > 65535:
        raise plumbing.UserError(f"{path} has {len(chars)} distinct characters; at most 65535 are supported")
    dtype = "uint8" if len(chars) <= 256 else "uint16"
    codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted, so id = rank of the codepoint

    def token_chunks():
        with open(path, encoding="utf-8") as f:
            while chunk := f.read(chunk_chars):
                codes = np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)
                yield np.searchsorted(codepoints, codes).astype(dtype).tobytes()

    plumbing.make_folder(os.path.dirname(bin_path) or ".", "out_dir")  # out_dir, when the text's folder is read-only
    plumbing.write_file(bin_path, token_chunks())
    n_tokens = os.path.getsize(bin_path) // np.dtype(dtype).itemsize
    meta = {"source": source, "chars": "".join(chars), "text_chars": "".join(text_chars), "dtype": dtype,
            "n_tokens": n_tokens}
    plumbing.write_file(meta_path, [json.dumps(meta).encode()])
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


if __name__ == "__main__":
    plumbing.run(main)  # main(sys.argv[1:]); a mistake the user can fix ends in one `error:` line, Ctrl-C in one line
