"""Measure the lessons and print markdown tables: every speed and loss figure in the README comes from here.

python bench.py                   every section (minutes on a GPU; on a CPU gpt2.py's default run alone
                                  takes hours, so choose sections with --only)
python bench.py --quick           tiny settings, a few minutes on a 2-core CPU: checks that everything runs
python bench.py --only=v2,video-v2 --device=cpu     some sections only
python bench.py --plot            the three lessons' val loss against time, from out/<script>/losses.csv
python bench.py --only=ladder --device=cpu --save_dir=runs      the ladder, its chart in runs/ladder/ladder.png
python bench.py --only=ex3 --device=cpu --save_dir=runs         the third exercise: pretrain, finetune, compare

Sections: bigram, v2, gpt2 (each script's default run, timed as a whole process), gpt2-fp16 (gpt2.py's
default run in float16 with a gradient scaler, as on a T4 or a V100), laptop (gpt2.py
with the laptop recipe, 10 minutes), laptop-3min (the same recipe in 3 minutes), sampling (1,000 new
tokens with and without the key/value cache), video-v2 (the video's own v2 code, same config, whole
process, and the ratio), video-gpt2 (training throughput of the video-style 10.8M model against
gpt2.py's, same config, and the ratio), ladder (the models the video builds on its way to v2.py, each
trained as v2.py trains: what each chapter buys in val loss, beside the video's own figures), ex3 (the
video's third exercise: gpt2.py pretrained on another text, then finetuned on tiny Shakespeare with
--init_from, beside a run from scratch of the same steps).
The video-style baselines use v2.py's model, which is the video's (one module per head, a mask buffer, a
masked softmax); only what the video does differently is here: its evaluation (200 random batches per split
every 100 steps), its get_batch and plain AdamW.
"""

import argparse
import csv
import datetime
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ("bigram", "v2", "gpt2", "gpt2-fp16", "laptop", "laptop-3min", "sampling", "video-v2", "video-gpt2",
            "ladder", "ex3")
LAPTOP_3MIN = "--block_size=64 --batch_size=32 --learning_rate=3e-3 --min_lr=3e-4 --time_budget=180"
TINY_GPT = "--n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=8 --eval_interval=25"
QUICK = {  # tiny settings for --quick: seconds each on a 2-core CPU
    "bigram": "--max_iters=100 --eval_interval=50",
    "v2": "--max_iters=100 --eval_interval=50",
    "gpt2": TINY_GPT + " --max_iters=50",
    "gpt2-fp16": TINY_GPT + " --max_iters=50",
    "laptop": TINY_GPT + " --time_budget=4",
    "laptop-3min": TINY_GPT + " --time_budget=4",
    "ladder": "--max_iters=20 --eval_interval=10",
}


def video_v2_run(input_file, device, max_iters, eval_interval, eval_iters):
    """The video's v2 training script (batch 16, block 32, 4 x 64 wide, lr 1e-3) with v2.py's model, which is the
    video's: only what differs from v2.py is here (its get_batch and its 200-batch estimate_loss, plain AdamW)."""
    import v2
    torch.manual_seed(1337)
    batch_size, block_size = 16, 32
    with open(input_file, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}

    def get_batch(split):
        d = splits[split]
        ix = torch.randint(len(d) - block_size, (batch_size,))
        x = torch.stack([d[i:i + block_size] for i in ix])
        y = torch.stack([d[i + 1:i + block_size + 1] for i in ix])
        return x.to(device), y.to(device)

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in splits:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                losses[k] = model(*get_batch(split))[1].item()
            out[split] = losses.mean().item()
        model.train()
        return out

    model = v2.GPTLanguageModel(len(chars), block_size, 64, 4, 4, 0.0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(max_iters):
        if step % eval_interval == 0 or step == max_iters - 1:
            losses = estimate_loss()
            print(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
        _, loss = model(*get_batch("train"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    context = torch.zeros((1, 1), dtype=torch.long, device=device)  # the video ends with 500 sampled characters
    print("".join(chars[i] for i in model.generate(context, 500)[0].tolist()))


def count_table_loss(path):
    """Val loss of a bigram count table: the train split's pair counts, add-one smoothed (bigram.py's floor)."""
    import numpy as np
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    data = np.array([stoi[c] for c in text])
    n = int(0.9 * len(data))
    counts = np.ones((len(stoi), len(stoi)))
    np.add.at(counts, (data[:n - 1], data[1:n]), 1)
    probs = counts / counts.sum(axis=1, keepdims=True)
    return float(-np.log(probs[data[n:-1], data[n + 1:]]).mean())


def run_process(argv):
    """Run a command from the repository root: (wall seconds, [(seconds since launch, stdout line)]).

    Lines are timestamped as they arrive, so the time to a val loss counts the whole process:
    Python's start-up, imports and compilation included. A failure stops the bench.
    """
    t0 = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        lines = [(time.time() - t0, line.rstrip("\n")) for line in proc.stdout]
        proc.wait()
        wall = time.time() - t0
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"bench: {' '.join(argv)} failed:\n{err.read()[-2000:]}")
    return wall, lines


def read_losses(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def bench_script(script, section, device, quick, target, work_dir, input_file):
    """One whole-process run of a lesson script; its figures from the process's clock and its loss log."""
    module = __import__(script)
    recipe = module.LAPTOP_RECIPE if section.startswith("laptop") else ""
    if section == "gpt2-fp16":  # the precision a T4 or a V100 trains in, on this GPU
        recipe = "--dtype=float16"
    if section == "laptop-3min":  # shorter windows and a higher learning rate pay off in 3 minutes
        recipe += " " + LAPTOP_3MIN
    overrides = recipe.split() + (QUICK[section] if quick else "").split()
    out_dir = os.path.join(work_dir, section)
    argv = [sys.executable, f"{script}.py", *overrides, f"--out_dir={out_dir}", "--max_new_tokens=0"]
    if input_file:
        argv.append(f"--input_file={input_file}")
    if device:
        argv.append(f"--device={device}")
    wall, lines = run_process(argv)
    rows = read_losses(os.path.join(out_dir, "losses.csv"))
    cfg = {**module.HYPERPARAMETERS, **module.parse_command_line(overrides, module.HYPERPARAMETERS)}
    steps = int(rows[-1]["step"])
    tokens_per_step = cfg["batch_size"] * cfg["block_size"] * cfg.get("grad_accum_steps", 1)
    # steady-state speed: from the second evaluation to the last (start-up and compilation excluded)
    later = rows[1:] if len(rows) > 2 else rows
    speed = (later[-1]["step"] - later[0]["step"]) * tokens_per_step / max(1e-9, later[-1]["elapsed_s"]
                                                                           - later[0]["elapsed_s"])
    evals = [(t, float(m.group(1))) for t, line in lines if (m := re.match(r"step \d+: .*val loss (\S+)", line))]
    reached = next((t for t, val in evals if val <= target), None) if target else None
    device_used = next(line for _, line in lines if line.startswith("using device: ")).split()[2]
    command = f"python {script}.py {' '.join(overrides)}".strip()
    mfu = None
    if script == "gpt2" and device_used.startswith("cuda"):  # model FLOPs utilisation, as gpt2.py computes it
        peak = module.peak_flops(device_used)
        model = module.build_model(cfg, 65)
        mfu = module.flops_per_token(model) * speed / peak if peak else None
    return {"script": f"{script}.py", "device": describe(device_used), "command": command, "steps": steps,
            "wall": wall, "per_step": wall / max(1, steps), "tok_s": speed,
            "best_val": min(r["val_loss"] for r in rows), "final_val": rows[-1]["val_loss"],
            "to_target": reached, "mfu": mfu, "out_dir": out_dir}


def describe(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    if device == "cpu":
        return f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    return device


def throughput(model, optimizer, batch, steps, autocast):
    """Training tokens per second of (model, optimizer) on one batch shape, after one warm-up step."""
    x, y = batch
    for i in range(steps + 1):
        if i == 1:
            sync(x.device)
            t0 = time.time()
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(x.device)
    return steps * x.numel() / (time.time() - t0)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_video_gpt2(device, quick, dropout):
    """Training throughput of the video's model (v2.py's, at gpt2.py's size) and of gpt2.py's, same batch."""
    import contextlib

    import gpt2
    import v2
    cfg = {**gpt2.HYPERPARAMETERS, "dropout": dropout}
    if quick:
        cfg.update(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8)
    steps = 4 if device == "cpu" else 50
    dev = torch.device(device)
    batch = [torch.randint(65, (cfg["batch_size"], cfg["block_size"]), device=dev) for _ in range(2)]
    torch.manual_seed(0)
    video = v2.build_model(cfg, 65).to(dev)
    video_speed = throughput(video, torch.optim.AdamW(video.parameters(), lr=1e-4), batch, steps,
                             contextlib.nullcontext())
    model = gpt2.build_model(cfg, 65).to(dev)
    optimizer = gpt2.configure_optimizer(model, {**cfg, "learning_rate": 1e-4}, fused=True)
    cuda = dev.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    ours = torch.compile(model) if cuda else model
    ours_speed = throughput(ours, optimizer, batch, steps, autocast)
    flops = gpt2.flops_per_token(model)
    n_video = sum(p.numel() for p in video.parameters()) / 1e6
    n_ours = sum(p.numel() for p in model.parameters()) / 1e6
    recipe = "bf16 autocast, torch.compile, fused AdamW" if cuda else "float32, fused attention and AdamW"
    return [
        (f"video-style ({n_video:.1f}M), dropout {dropout}", "float32, per-head modules, masked softmax",
         video_speed, flops * video_speed / 1e9),
        (f"gpt2.py ({n_ours:.1f}M), dropout {dropout}", recipe, ours_speed, flops * ours_speed / 1e9),
    ], ours_speed / video_speed


def bench_sampling(device, quick, n_tokens):
    """New tokens per second from gpt2.py's model with and without the key/value cache."""
    import gpt2
    cfg = dict(gpt2.HYPERPARAMETERS)
    if quick:
        cfg.update(n_layer=2, n_head=2, n_embd=64, block_size=64)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = gpt2.build_model(cfg, 65).to(dev).eval()
    result = {}
    for use_cache in (True, False):
        idx = torch.zeros((1, 1), dtype=torch.long, device=dev)
        model.generate(idx, 8, use_cache=use_cache)  # warm-up
        sync(dev)
        t0 = time.time()
        model.generate(idx, n_tokens, generator=torch.Generator(dev).manual_seed(0), use_cache=use_cache)
        sync(dev)
        result[use_cache] = n_tokens / (time.time() - t0)
    return result


# The ladder: the models the video builds on its way to v2.py, in its order, each made of v2.py's own classes.
# differs from the video: v2.py's attention and feed-forward carry the projection (and 4x width) it adds at residuals
LADDER = (  # (row name, the video's chapter, the val loss the video states there, at its own smaller settings)
    ("bigram table", "training the bigram model", "~2.5"),
    ("+ one self-attention head", "inserting a single self-attention block to our network", "~2.4"),
    ("+ multi-head attention", "multi-headed self-attention", "~2.28"),
    ("+ feed-forward", "feedforward layers of transformer block", "2.24"),
    ("+ blocks with residual connections", "residual connections", "2.08"),
    ("+ LayerNorm (v2.py)", "layernorm and its relationship to our previous batchnorm", "2.06"),
)


def ladder_model(rung, cfg, vocab_size):
    """The model of one rung: bigram.py's model, then v2.py's GPTLanguageModel with its blocks swapped for the
    rung's body and its final LayerNorm left out, up to the last rung, which is v2.py's model as it stands."""
    import bigram
    import v2
    if rung == 0:
        return bigram.BigramLanguageModel(vocab_size)
    model = v2.build_model(cfg, vocab_size)
    if rung == len(LADDER) - 1:
        return model
    C, n_head, T, dropout = cfg["n_embd"], cfg["n_head"], cfg["block_size"], cfg["dropout"]
    if rung == 1:  # one head as wide as the embedding: (B, T, C) -> (B, T, hs=C), straight into lm_head
        body = v2.Head(C, C, T, dropout)
    elif rung == 2:  # n_head heads of C // n_head, concatenated back to (B, T, C), then v2.py's projection
        body = v2.MultiHeadAttention(C, n_head, C // n_head, T, dropout)
    elif rung == 3:  # attention, then the feed-forward, one after the other: no residual connections yet
        body = nn.Sequential(v2.MultiHeadAttention(C, n_head, C // n_head, T, dropout), v2.FeedForward(C, dropout))
    else:  # n_layer of v2.py's Block, x + sa(x) and x + ffwd(x), without its LayerNorms
        body = nn.Sequential(*[without_layernorm(v2.Block(C, n_head, T, dropout)) for _ in range(cfg["n_layer"])])
    model.blocks, model.ln_f = body, nn.Identity()
    return model


def without_layernorm(block):
    block.ln1, block.ln2 = nn.Identity(), nn.Identity()
    return block


def train_like_v2(build, cfg, dev):
    """Train the model build(cfg, vocab_size) makes with v2.py's own train(): its seeding, batches, fused AdamW,
    exact evaluation and loss log (in cfg["out_dir"]), its output silenced. Returns the evaluations
    [(step, train loss, val loss, seconds since the start: the loop with its evaluations)] and the trained model."""
    import contextlib
    import io

    import v2
    built, build_model = [], v2.build_model

    def build_rung(cfg, vocab_size):  # what v2.train builds, in place of its own model
        v2.build_model = build_model  # back at once: the rung's model may be made by v2.py's builder
        built.append(build(cfg, vocab_size))
        return built[-1]
    os.makedirs(cfg["out_dir"], exist_ok=True)
    v2.build_model = build_rung
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            v2.train({**cfg, "max_new_tokens": 0}, dev)
    finally:
        v2.build_model = build_model
    rows = read_losses(os.path.join(cfg["out_dir"], "losses.csv"))
    return [(int(r["step"]), r["train_loss"], r["val_loss"], r["elapsed_s"]) for r in rows], built[0]


def bench_ladder(device, quick, input_file, work_dir, save_dir):
    """Train every rung of the ladder with v2.py's settings and its train(); each rung's files (losses.csv,
    loss.png, ckpt.pt) in <save_dir or work_dir>/ladder/<n>-<rung>/, and the chart there too, with save_dir.
    Returns the markdown lines of the table."""
    import v2
    overrides = v2.parse_command_line(QUICK["ladder"].split() if quick else [], v2.HYPERPARAMETERS)
    folder = os.path.join(save_dir or work_dir, "ladder")
    runs = []
    for rung, (name, _, _) in enumerate(LADDER):
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        cfg = {**v2.HYPERPARAMETERS, **overrides, "input_file": input_file,
               "out_dir": os.path.join(folder, f"{rung + 1}-{slug}")}
        rows, model = train_like_v2(functools.partial(ladder_model, rung), cfg, device)
        runs.append((name, sum(p.numel() for p in model.parameters()), rows, rows[-1][3]))
        print(f"ladder: {name}: {rows[-1][3]:.1f} s, val {rows[-1][2]:.4f}", flush=True)
    if save_dir:
        plot_ladder(runs, os.path.join(folder, "ladder.png"), cfg)
    lines = [f"| step of the ladder (the video's chapter) | parameters | val loss at step {cfg['max_iters']} | time | "
             "the video's val loss |", "|---|---|---|---|---|"]
    for (name, n_params, rows, seconds), (_, chapter, video) in zip(runs, LADDER, strict=True):
        lines.append(f'| {name} ("{chapter}") | {n_params:,} | {rows[-1][2]:.4f} | {seconds:.1f} s | {video} |')
    return lines + ["", f"Each rung trained as v2.py trains, with its settings (batch {cfg['batch_size']}, block "
                    f"{cfg['block_size']}, {cfg['max_iters']} steps, learning rate {cfg['learning_rate']:g}, n_embd "
                    f"{cfg['n_embd']}, {cfg['n_head']} heads, {cfg['n_layer']} layers, seed {cfg['seed']}), the bigram "
                    "table too; the last rung is v2.py's own run. Time: the training loop with its evaluations. "
                    "v2.py's multi-head attention and feed-forward carry the output projection (and the 4x-wide "
                    "feed-forward) that the video adds only with its residual connections. The video's figures are "
                    "from its own smaller runs (n_embd 32, block_size 8, loss averaged over random batches): compare "
                    "the steps down each column, not the columns.", ""]


def plot_ladder(runs, png_path, cfg):
    """Val loss against step, one line per rung of the ladder; the y axis spans the rungs' final losses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for rung, (name, _, rows, _) in enumerate(runs):
        ax.plot([r[0] for r in rows], [r[2] for r in rows], marker=".", label=f"{name}: {rows[-1][2]:.4f}",
                linestyle="--" if rung == len(runs) - 1 else "-")  # dashed: v2.py, seen even on the rung before
    finals, highest = [rows[-1][2] for _, _, rows, _ in runs], max(r[2] for _, _, rows, _ in runs for r in rows)
    top = min(highest, 1.2 * max(finals))  # the first evaluations, far above the rest, would squash the curves
    ax.set_ylim(0.95 * min(finals), top + 0.02)
    below = " (the first steps' higher losses are above the chart)" if top < highest else ""
    ax.set(xlabel=f"step (of {cfg['max_iters']}){below}", ylabel="val loss (nats per character)",
           title="What each step of the video buys, trained as v2.py trains")
    ax.grid(alpha=0.3)
    ax.legend(title="step of the ladder: final val loss", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    print(f"ladder chart in {png_path}")


# EX3, the video's third exercise: pretrain gpt2.py on another text, then finetune it on tiny Shakespeare
EX3 = {  # pretraining steps, then the finetuning (and from-scratch) steps and the finetuning learning rates
    "cpu": (6000, 500, "--learning_rate=3e-4 --min_lr=3e-5 --warmup_iters=50"),
    "cuda": (2000, 300, "--learning_rate=1e-4 --min_lr=1e-5 --warmup_iters=30"),
    "quick": (60, 40, "--learning_rate=3e-4 --min_lr=3e-5 --warmup_iters=5"),
}


def write_pretraining_text(path, max_chars=0):
    """A text of several megabytes with no line of tiny Shakespeare, rebuilt offline from the Python running this:
    the docstrings and comments of its standard library, in printable ASCII (so that it has every character of
    tiny Shakespeare, and a few more). max_chars > 0 stops early. Returns (characters, sha256 of the text)."""
    import ast
    import hashlib
    import io
    import string
    import sysconfig
    import tokenize
    parts, size = [], 0
    for folder, subfolders, files in os.walk(sysconfig.get_paths()["stdlib"]):
        subfolders[:] = sorted(name for name in subfolders if name not in ("site-packages", "__pycache__"))
        for name in sorted(name for name in files if name.endswith(".py")):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    source = f.read()
                nodes = ast.walk(ast.parse(source))
                tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
            except (SyntaxError, UnicodeDecodeError, ValueError, tokenize.TokenError):
                continue  # the standard library's own tests hold a few files that are broken on purpose
            docstrings = [ast.get_docstring(node) for node in nodes if isinstance(
                node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
            comments = [t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT]
            found = [d for d in docstrings if d and len(d) > 40] + ["\n".join(c for c in comments if len(c) > 20)]
            parts += found
            size += sum(map(len, found))
            if max_chars and size >= max_chars:
                break
        if max_chars and size >= max_chars:
            break
    printable = set(string.printable) - set("\t\r\x0b\x0c")
    text = "".join(c for c in "\n\n".join(p.replace("\t", "    ") for p in parts if p) if c in printable) + "\n"
    sys.path.insert(0, ROOT)
    import v2
    v2.check_input_file(os.path.join(ROOT, "input.txt"))  # tiny Shakespeare, to check against (downloaded if missing)
    with open(os.path.join(ROOT, "input.txt"), encoding="utf-8") as f:
        shared = [line for line in set(f.read().splitlines()) if len(line) >= 30 and line in text]
    if shared:
        sys.exit(f"bench: the pretraining text holds lines of tiny Shakespeare, e.g. {shared[0]!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return len(text), hashlib.sha256(text.encode()).hexdigest()


def bench_ex3(device, quick, work_dir, pretrain_text, input_file, save_dir):
    """EX3: pretrain on the pretraining text, finetune on tiny Shakespeare with --init_from, and train from scratch
    for the same steps; the laptop recipe's model on a CPU, the default model on CUDA. Returns markdown lines."""
    import gpt2
    kind = "quick" if quick else "cuda" if device.startswith("cuda") else "cpu"
    pre_steps, steps, finetune_lr = EX3[kind]
    model = {"quick": TINY_GPT, "cuda": "", "cpu": gpt2.LAPTOP_RECIPE.replace(" --time_budget=600", "")}[kind]
    model += f" --device={device}"
    folder = os.path.join(save_dir or work_dir, "ex3")
    os.makedirs(folder, exist_ok=True)
    pretrain_text = os.path.abspath(pretrain_text) if pretrain_text else os.path.join(folder, "pretrain.txt")
    if not os.path.exists(pretrain_text):
        n_chars, digest = write_pretraining_text(pretrain_text, 200_000 if quick else 0)
        print(f"ex3: the pretraining text, {n_chars:,} characters (sha256 {digest[:12]}), in {pretrain_text}")
    shakespeare = f" --input_file={input_file}" if input_file else ""
    interval = max(1, steps // 5)
    runs = [  # (name, the flags after python gpt2.py, where it writes)
        ("pretrain", f"{model} --input_file={pretrain_text} --max_iters={pre_steps} --eval_interval="
         f"{max(1, pre_steps // 6)}", "pretrain"),
        ("finetune", f"{model}{shakespeare} --init_from={os.path.join(folder, 'pretrain')} --max_iters={steps} "
         f"--eval_interval={interval} {finetune_lr}", "finetune"),
        ("from scratch", f"{model}{shakespeare} --max_iters={steps} --eval_interval={interval}", "scratch"),
    ]
    lines = ["| EX3 run | command | steps | wall time | val loss at step 0 | best val |", "|---|---|---|---|---|---|"]
    for name, flags, out in runs:
        out_dir = os.path.join(folder, out)
        wall, _ = run_process([sys.executable, "gpt2.py", *flags.split(), f"--out_dir={out_dir}", "--max_new_tokens=0"])
        rows = read_losses(os.path.join(out_dir, "losses.csv"))
        shown = flags.replace(pretrain_text, "ex3/pretrain.txt").replace(folder, "ex3").replace(f" --device={device}",
                                                                                                 "")
        lines.append(f"| {name} | `python gpt2.py {shown.strip()} --out_dir=ex3/{out}` | {int(rows[-1]['step'])} | "
                     f"{wall:.1f} s | {rows[0]['val_loss']:.4f} | {min(r['val_loss'] for r in rows):.4f} |")
        print(f"ex3: {name}: {wall:.1f} s, best val {min(r['val_loss'] for r in rows):.4f}", flush=True)
    return lines + ["", "The pretraining run's losses are on its own text; the other two on tiny Shakespeare's val "
                    "split. Compare them with the default from-scratch run (the gpt2 row on CUDA, the laptop row on "
                    "a CPU).", ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a few minutes on a 2-core CPU")
    parser.add_argument("--device", default="", help="cuda, mps or cpu (default: what the scripts pick)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--target", type=float, default=1.47, help="gpt2.py: report the time to this val loss")
    parser.add_argument("--save_dir", default="", help="keep each run's losses.csv, loss.png and ckpt.pt in "
                        "SAVE_DIR/<section>/, and the ladder's loss logs and ladder.png in SAVE_DIR/ladder/")
    parser.add_argument("--input_file", default="", help="train on this text instead of input.txt")
    parser.add_argument("--pretrain_text", default="", help="ex3: pretrain on this text instead of building one "
                        "from this Python's standard library (write_pretraining_text)")
    parser.add_argument("--plot", action="store_true", help="only draw the three lessons' val loss against time, "
                        "from RUNS_DIR/<script>/losses.csv, into PLOT_FILE")
    parser.add_argument("--runs_dir", default="out", help="--plot: the folder of the runs: out (the scripts' own "
                        "out/<script>/), or a --save_dir (default: out)")
    parser.add_argument("--plot_file", default="out/lessons.png", help="--plot: the PNG to write")
    args = parser.parse_args()
    if args.plot:
        plot_lessons(args.runs_dir, args.plot_file)
        return
    sections = args.only.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available()
                             else "cpu")
    sys.path.insert(0, ROOT)
    import v2
    input_file = os.path.abspath(args.input_file) if args.input_file else os.path.join(ROOT, "input.txt")
    v2.check_input_file(input_file)  # downloads tiny Shakespeare if input.txt is missing
    with tempfile.TemporaryDirectory(prefix="bench-") as work_dir:
        lines = run_sections(args, sections, device, work_dir, input_file if args.input_file else "")
    print("\n".join(lines))


def plot_lessons(runs_dir, png_path):
    """The three lessons on one chart: val loss against training time, from each script's loss log."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = []
    for script, folders in (("bigram", ["bigram"]), ("v2", ["v2"]), ("gpt2", ["laptop", "gpt2"])):
        paths = [os.path.join(runs_dir, folder, "losses.csv") for folder in folders]  # a user's out/<script>, or
        path = next((p for p in paths if os.path.exists(p)), None)  # bench.py --save_dir's <section> (laptop first)
        if path is None:
            print(f"{' or '.join(paths)} not found: {script}.py is left out of the chart")
            continue
        rows = read_losses(path)
        best = min(r["val_loss"] for r in rows)
        recipe = " (laptop recipe)" if os.path.basename(os.path.dirname(path)) == "laptop" else ""
        ax.plot([r["elapsed_s"] for r in rows], [r["val_loss"] for r in rows], marker=".",
                label=f"{script}.py{recipe}: best val loss {best:.2f} after {rows[-1]['elapsed_s']:.0f} s")
        drawn.append(f"{script}.py {best:.4f}")
    if not drawn:
        sys.exit(f"bench: no loss log in {runs_dir}/<script>/losses.csv; run the scripts first")
    ax.set_xscale("symlog", linthresh=10)  # seconds: the first ten linear, then each tenfold the same width
    ax.set(xlabel="training time (s)", ylabel="val loss (nats per character)",
           title="The three lessons: val loss against training time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(png_path) or ".", exist_ok=True)
    fig.savefig(png_path, dpi=80)
    print(f"{', '.join(drawn)}: chart in {png_path}")


def run_sections(args, sections, device, work_dir, input_file):
    """Run the chosen sections; return the markdown lines of their tables."""
    today = datetime.date.today().isoformat()
    print(f"bench on {describe(device)}, torch {torch.__version__}, {today}\n", flush=True)

    runs = []
    for section, script in (("bigram", "bigram"), ("v2", "v2"), ("gpt2", "gpt2"), ("gpt2-fp16", "gpt2"),
                            ("laptop", "gpt2"), ("laptop-3min", "gpt2")):
        if section in sections:
            target = args.target if script == "gpt2" else None
            runs.append(bench_script(script, section, args.device, args.quick, target, work_dir, input_file))
            r = runs[-1]
            if args.save_dir:  # save_dir/<section>/: what --plot --runs_dir=save_dir reads, and --sample --out_dir
                os.makedirs(os.path.join(args.save_dir, section), exist_ok=True)
                for name in ("losses.csv", "loss.png", "ckpt.pt"):
                    if os.path.exists(os.path.join(r["out_dir"], name)):
                        shutil.copy(os.path.join(r["out_dir"], name), os.path.join(args.save_dir, section, name))
            print(f"{section}: {r['wall']:.1f} s, best val {r['best_val']:.4f}", flush=True)
    lines = []
    if runs:
        lines += ["| script | device | command | steps | wall time | time/step | tokens/s | MFU | best val | "
                  f"time to val {args.target} | date |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            to_target = f"{r['to_target']:.1f} s" if r["to_target"] is not None else "–"
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "–"
            lines.append(f"| {r['script']} | {r['device']} | `{r['command']}` | {r['steps']} | {r['wall']:.1f} s | "
                         f"{r['per_step'] * 1e3:.1f} ms | {r['tok_s']:,.0f} | {mfu} | {r['best_val']:.4f} | "
                         f"{to_target} | {today} |")
        lines.append("")
    if "bigram" in sections:
        text = input_file or os.path.join(ROOT, "input.txt")
        lines += [f"A bigram count table (the train split's pair counts, add-one smoothed) scores val loss "
                  f"{count_table_loss(text):.4f}: the floor for bigram.py.", ""]
    if "video-v2" in sections:
        iters = 100 if args.quick else 5000
        text = input_file or os.path.join(ROOT, "input.txt")
        code = f"import bench; bench.video_v2_run({text!r}, {device!r}, {iters}, 100, {20 if args.quick else 200})"
        wall_video, _ = run_process([sys.executable, "-c", code])
        ours = next((r for r in runs if r["script"] == "v2.py"), None) or bench_script(
            "v2", "v2", args.device, args.quick, None, work_dir, input_file)
        lines += ["| v2, same config | steps | wall time (whole process) |", "|---|---|---|",
                  f"| the video's code (200-batch eval every 100 steps, plain AdamW) | {iters} | {wall_video:.1f} s |",
                  f"| v2.py | {ours['steps']} | {ours['wall']:.1f} s |",
                  f"| speedup | | **{wall_video / ours['wall']:.2f}x** |", ""]
    if "video-gpt2" in sections:
        lines += ["| GPT training throughput, same config and batch | precision and kernels | tokens/s | GFLOP/s |",
                  "|---|---|---|---|"]
        for dropout in (0.2, 0.0):  # the default config's dropout, and the laptop recipe's
            rows, ratio = bench_video_gpt2(device, args.quick, dropout)
            lines += [f"| {name} | {how} | {speed:,.0f} | {gflops:,.1f} |" for name, how, speed, gflops in rows]
            lines += [f"| speedup, dropout {dropout} | | **{ratio:.2f}x** | |"]
        lines.append("")
    if "sampling" in sections:
        n_tokens = 200 if args.quick else 1000
        speed = bench_sampling(device, args.quick, n_tokens)
        lines += [f"| gpt2.py sampling, {n_tokens} new tokens | tokens/s |", "|---|---|",
                  f"| with the key/value cache | {speed[True]:,.0f} |",
                  f"| without (whole context every token) | {speed[False]:,.0f} |",
                  f"| speedup | **{speed[True] / speed[False]:.1f}x** |", ""]
    if "ladder" in sections:
        lines += bench_ladder(device, args.quick, input_file or os.path.join(ROOT, "input.txt"), work_dir,
                              args.save_dir)
    if "ex3" in sections:
        lines += bench_ex3(device, args.quick, work_dir, args.pretrain_text, input_file, args.save_dir)
    return lines


if __name__ == "__main__":
    main()
