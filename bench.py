"""Measure the lessons and print markdown tables (the README's bigram.py and v2.py times are plain runs of the
scripts; most other speed and loss figures in the docs come from here, each page says which).

python bench.py                   every section (minutes on a GPU; on a CPU gpt2.py's default run alone
                                  takes hours, so choose sections with --only)
python bench.py --quick           tiny settings on a short text: checks that every section runs
python bench.py --env             this machine, its packages and what each script would pick: for a bug report
python bench.py --only=v2,video-v2 --device=cpu     some sections only
python bench.py --plot            the three lessons' val loss against time, from out/<script>/losses.csv
python bench.py --only=ladder --device=cpu --save_dir=runs      the ladder, its chart in runs/ladder/ladder.png
python bench.py --sample_rung=runs/ladder/3-multi-head-attention --prompt="ROMEO:"     sample a ladder rung
python bench.py --only=ex3 --device=cpu --save_dir=runs         the third exercise: pretrain, finetune, compare
python bench.py --script=my_v2.py --max_iters=2000              your copy of a lesson against the original, in turn

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
every 100 steps), its get_batch and plain AdamW. Precision, compilation, fused AdamW and the sampling device
are gpt2.py's own choices for the device (choose_precision, choose_compile, fused_adamw, sampling_device).
"""

import argparse
import contextlib
import csv
import dataclasses
import datetime
import functools
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

import bigram
import gpt2
import plumbing
import v2

ROOT = os.path.dirname(os.path.abspath(__file__))
LESSONS = {"bigram": bigram, "v2": v2, "gpt2": gpt2}
SECTIONS = ("bigram", "v2", "gpt2", "gpt2-fp16", "laptop", "laptop-3min", "sampling", "video-v2", "video-gpt2",
            "ladder", "ex3")
LAPTOP_3MIN = "--block_size=64 --batch_size=32 --learning_rate=3e-3 --min_lr=3e-4 --time_budget=180"
TINY_GPT = ("--n_layer=1 --n_head=2 --n_embd=32 --block_size=32 --batch_size=4 --eval_interval=5 "
            "--eval_train_windows=16 --max_val_windows=64")
QUICK = {  # tiny settings for --quick: every section runs, its figures mean nothing
    "bigram": "--max_iters=20 --eval_interval=10 --eval_train_windows=16",
    "v2": "--max_iters=20 --eval_interval=10 --eval_train_windows=16",
    "gpt2": TINY_GPT + " --max_iters=10",
    "gpt2-fp16": TINY_GPT + " --max_iters=10",
    "laptop": TINY_GPT + " --time_budget=1",
    "laptop-3min": TINY_GPT + " --time_budget=1",
    "ladder": "--max_iters=10 --eval_interval=5 --eval_train_windows=16",
}
SAMPLING = ("prompt", "max_new_tokens", "temperature", "top_k", "seed")  # v2.py's settings --sample_rung takes


class UserError(Exception):
    """A mistake the user can fix: printed as one line, `error: ...`, exit code 2, without a traceback."""


def is_user_error(error):
    """bench.py's UserError, or the lessons' (plumbing.py's), raised by a function that bench.py called."""
    return isinstance(error, (UserError, plumbing.UserError))


def video_v2_run(input_file, device, max_iters, eval_interval, eval_iters, n_sample=500):
    """The video's v2 training script (batch 16, block 32, 4 x 64 wide, lr 1e-3) with v2.py's model, which is the
    video's: only what differs from v2.py is here (its get_batch and its 200-batch estimate_loss, plain AdamW)."""
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
    print("".join(chars[i] for i in model.generate(context, n_sample)[0].tolist()))


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
    Python's start-up, imports and compilation included. A script's refusal (its one `error: ...` line, exit
    code 2) becomes bench.py's own; any other failure stops the bench with the end of what it printed.
    """
    t0 = time.time()
    # a copy of a lesson kept outside the repository imports plumbing.py from here
    path = os.pathsep.join(filter(None, (ROOT, os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                encoding="utf-8", errors="replace")
        lines = [(time.time() - t0, line.rstrip("\n")) for line in proc.stdout]
        proc.wait()
        wall = time.time() - t0
        if proc.returncode != 0:
            err.seek(0)
            message = err.read()
            last = re.split(r"[\r\n]+", message.strip())[-1] if message.strip() else ""
            if proc.returncode == 2 and last.startswith("error: "):  # the tqdm bar may share its line: \r splits
                raise UserError(last.removeprefix("error: "))
            sys.exit(f"bench: {' '.join(argv)} failed (exit code {proc.returncode}):\n{message[-2000:]}")
    return wall, lines


def read_losses(path):
    """The rows of a loss log, each {column: float}; a damaged or empty log is a UserError naming it."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not a loss log; remove it, or run the script again")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path} is damaged ({type(error).__name__}: {error}); run the script again "
                        "to write a new one") from None
    if not rows or not all({"step", "val_loss", "elapsed_s"} <= set(row) for row in rows):
        raise UserError(f"{path} holds no evaluation (step, val_loss, elapsed_s); run the script again")
    return rows


def bench_script(script, section, device, quick, target, work_dir, input_file):
    """One whole-process run of a lesson script; its figures from the process's clock and its loss log."""
    module = LESSONS[script]
    recipe = module.LAPTOP_RECIPE if section.startswith("laptop") else ""
    if section == "gpt2-fp16":  # the precision a T4 or a V100 trains in, on this GPU
        recipe = "--dtype=float16"
    if section == "laptop-3min":  # shorter windows and a higher learning rate pay off in 3 minutes
        recipe += " " + LAPTOP_3MIN
    overrides = recipe.split() + (QUICK[section] if quick else "").split()
    out_dir = os.path.join(work_dir, section)
    argv = [sys.executable, f"{script}.py", *overrides, f"--out_dir={out_dir}", "--max_new_tokens=0",
            f"--device={device}"]
    if input_file:
        argv.append(f"--input_file={input_file}")
    wall, lines = run_process(argv)
    rows = read_losses(os.path.join(out_dir, "losses.csv"))
    cfg = {**module.HYPERPARAMETERS, **plumbing.parse_command_line(overrides, module.SCRIPT)}
    steps = int(rows[-1]["step"])
    tokens_per_step = cfg["batch_size"] * cfg["block_size"] * cfg.get("grad_accum_steps", 1)
    # steady-state speed: from the second evaluation to the last (start-up and compilation excluded)
    later = rows[1:] if len(rows) > 2 else rows
    speed = (later[-1]["step"] - later[0]["step"]) * tokens_per_step / max(1e-9, later[-1]["elapsed_s"]
                                                                           - later[0]["elapsed_s"])
    evals = [(t, float(m.group(1))) for t, line in lines if (m := re.match(r"step \d+: .*val loss (\S+)", line))]
    reached = next((t for t, val in evals if val <= target), None) if target else None
    command = f"python {script}.py {' '.join(overrides)}".strip()
    mfu = None
    if script == "gpt2" and device.startswith("cuda"):  # model FLOPs utilisation, as gpt2.py computes it
        peak = gpt2.peak_flops(device)
        mfu = gpt2.flops_per_token(gpt2.build_model(cfg, 65)) * speed / peak if peak else None
    return {"script": f"{script}.py", "device": describe(device), "command": command, "steps": steps,
            "wall": wall, "per_step": wall / max(1, steps), "tok_s": speed,
            "best_val": min(r["val_loss"] for r in rows), "final_val": rows[-1]["val_loss"],
            "to_target": reached, "mfu": mfu, "out_dir": out_dir}


def pick_device(requested):
    """--device, or what the lessons pick: cuda, then mps, then cpu; a device this machine lacks is a UserError."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if requested not in ("", *available):
        raise UserError(f"--device must be cuda, mps or cpu (or left out to pick one), got {requested!r}")
    if requested and not available[requested]:
        raise UserError(f"--device={requested} was asked for but this machine has no {requested}; "
                        "use --device=cpu or leave --device out to pick the best one available")
    return requested or next(name for name, ok in available.items() if ok)


def describe(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    if device == "cpu":
        return f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    return device


def throughput(model, optimizer, cfg, dev, steps, autocast, scaler=None):
    """Training tokens per second of (model, optimizer) on one batch of cfg's shape, after one warm-up step."""
    x, y = [torch.randint(65, (cfg["batch_size"], cfg["block_size"])).to(dev) for _ in range(2)]
    for i in range(steps + 1):
        if i == 1:
            sync(x.device)
            t0 = time.time()
        with autocast:
            _, loss = model(x, y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:  # as gpt2.py steps: a float16 loss is scaled, and the step skipped if a gradient overflowed
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
    sync(x.device)
    return steps * x.numel() / (time.time() - t0)


def sync(device):
    """Wait for the device's queued work, so that a clock reading counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def gpt2_choices(device):
    """What gpt2.py trains with on this device: (dtype, use torch.compile, fused AdamW), from its own functions."""
    dtype, _ = gpt2.choose_precision("auto", device)
    use_compile, _ = gpt2.choose_compile(True, device)  # --compile left at its default, as `python gpt2.py` runs
    return dtype, use_compile, gpt2.fused_adamw(device)


def bench_video_gpt2(device, quick, dropout):
    """Training throughput of the video's model (v2.py's, at gpt2.py's size) and of gpt2.py's, same batch; gpt2.py's
    model with the precision, compilation and AdamW gpt2.py would choose on this device."""
    cfg = {**gpt2.HYPERPARAMETERS, "dropout": dropout}
    if quick:
        cfg.update(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4)
    steps = 2 if quick else 4 if device == "cpu" else 50
    dev = torch.device(device)
    torch.manual_seed(0)
    video = v2.build_model(cfg, 65).to(dev)
    video_speed = throughput(video, torch.optim.AdamW(video.parameters(), lr=1e-4), cfg, dev, steps,
                             contextlib.nullcontext())
    dtype, use_compile, fused = gpt2_choices(device)
    model = gpt2.build_model(cfg, 65).to(dev)
    optimizer = gpt2.configure_optimizer(model, {**cfg, "learning_rate": 1e-4}, fused=fused)
    ours = torch.compile(model) if use_compile else model
    ours_speed = throughput(ours, optimizer, cfg, dev, steps, gpt2.autocast_context(dtype, device),
                            gpt2.gradient_scaler(dtype, device))
    flops = gpt2.flops_per_token(model)
    n_video = sum(p.numel() for p in video.parameters()) / 1e6
    n_ours = sum(p.numel() for p in model.parameters()) / 1e6
    recipe = ", ".join([gpt2.PRECISION_NAMES[dtype], "fused attention"] + ["torch.compile"] * use_compile
                       + ["fused AdamW" if fused else "AdamW"])
    return [
        (f"video-style ({n_video:.1f}M), dropout {dropout}", "float32, per-head modules, masked softmax",
         video_speed, flops * video_speed / 1e9),
        (f"gpt2.py ({n_ours:.1f}M), dropout {dropout}", recipe, ours_speed, flops * ours_speed / 1e9),
    ], ours_speed / video_speed


def bench_sampling(device, quick, n_tokens):
    """New tokens per second from gpt2.py's model with and without the key/value cache."""
    cfg = dict(gpt2.HYPERPARAMETERS)
    if quick:
        cfg.update(n_layer=1, n_head=2, n_embd=32, block_size=32)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = gpt2.build_model(cfg, 65).to(dev).eval()
    result = {}
    for use_cache in (True, False):
        idx = torch.zeros((1, 1), dtype=torch.long, device=dev)
        model.generate(idx, 8, use_cache=use_cache)  # warm-up
        sync(dev)
        t0 = time.time()
        generator = torch.Generator(plumbing.sampling_device(dev)).manual_seed(0)  # where gpt2.py's sampling draws
        model.generate(idx, n_tokens, generator=generator, use_cache=use_cache)
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
    overrides = plumbing.parse_command_line(QUICK["ladder"].split() if quick else [], v2.SCRIPT)
    folder = os.path.join(save_dir or work_dir, "ladder")
    runs = []
    for rung, (name, _, _) in enumerate(LADDER):
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        cfg = {**v2.HYPERPARAMETERS, **overrides, "input_file": input_file,
               "out_dir": os.path.join(folder, f"{rung + 1}-{slug}")}
        rows, model = train_like_v2(functools.partial(ladder_model, rung), cfg, device)
        if rung < len(LADDER) - 1:  # the last rung is v2.py's own model: its checkpoint stays v2.py's
            mark_rung(cfg["out_dir"], rung, name)
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


def mark_rung(out_dir, rung, name):
    """Give a rung's checkpoint its own identity: v2.py refuses it by name, and it says how it is sampled."""
    path = os.path.join(out_dir, "ckpt.pt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint.update(script="ladder", rung=rung, what=f"{name} (a ladder rung of bench.py)",
                      sample_with=f"python bench.py --sample_rung={out_dir}")
    buffer = io.BytesIO()  # written as the scripts write theirs: whole, or not at all
    torch.save(checkpoint, buffer)
    plumbing.write_file(path, [buffer.getvalue()])


def load_rung(folder):
    """The checkpoint of a ladder rung in folder (the last rung's is v2.py's own); anything else is a UserError."""
    path = os.path.join(folder, "ckpt.pt")
    if not os.path.isdir(folder):
        raise UserError(f"--sample_rung={folder} is not a folder; pass a rung's folder, e.g. runs/ladder/2-...")
    if not os.path.isfile(path):
        raise UserError(f"no ladder rung in {folder} (no ckpt.pt); make the ladder first with: "
                        "python bench.py --only=ladder --save_dir=runs")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{path} is not a readable checkpoint ({type(error).__name__}); make the ladder again "
                        "with: python bench.py --only=ladder --save_dir=runs") from None
    found = checkpoint.get("script") if isinstance(checkpoint, dict) else None
    if found not in ("ladder", "v2"):
        raise UserError(f"{path} is not a ladder rung" + (f" (it is from {found}.py: sample it with python "
                        f"{found}.py --sample --out_dir={folder})" if found in LESSONS else ""))
    return checkpoint


def sample_rung(folder, device, argv):
    """--sample_rung: the rung saved in folder continues --prompt, with v2.py's sampling settings in argv."""
    checkpoint = load_rung(folder)
    settings = dataclasses.replace(v2.SCRIPT, hyperparameters={name: v2.HYPERPARAMETERS[name] for name in SAMPLING})
    cfg = {**v2.HYPERPARAMETERS, **checkpoint["config"], **plumbing.parse_command_line(argv, settings)}
    plumbing.check_config(cfg)
    dev = pick_device(device)
    chars = checkpoint["chars"]
    model = ladder_model(checkpoint.get("rung", len(LADDER) - 1), cfg, len(chars)).to(dev)
    plumbing.load_weights(v2.SCRIPT, model, checkpoint, os.path.join(folder, "ckpt.pt"))
    print(checkpoint.get("what", f"{LADDER[-1][0]} (v2.py's own model, the ladder's last rung)"))
    print(v2.generate_text(model, cfg, {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars)), dev))


def plot_ladder(runs, png_path, cfg):
    """Val loss against step, one line per rung of the ladder; the y axis spans the rungs' final losses."""
    plt = plumbing.import_pyplot()
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
    plumbing.save_figure(fig, png_path)
    print(f"ladder chart in {png_path}")


# EX3, the video's third exercise: pretrain gpt2.py on another text, then finetune it on tiny Shakespeare
EX3 = {  # pretraining steps, then the finetuning (and from-scratch) steps and the finetuning learning rates
    "cpu": (6000, 500, "--learning_rate=3e-4 --min_lr=3e-5 --warmup_iters=50"),
    "cuda": (2000, 300, "--learning_rate=1e-4 --min_lr=1e-5 --warmup_iters=30"),
    "quick": (20, 10, "--learning_rate=3e-4 --min_lr=3e-5 --warmup_iters=2"),
}


def stdlib_sources():
    """(path, source) of every .py file of the standard library running this, in a fixed order."""
    import sysconfig
    for folder, subfolders, files in os.walk(sysconfig.get_paths()["stdlib"]):
        subfolders[:] = sorted(name for name in subfolders if name not in ("site-packages", "__pycache__"))
        for name in sorted(name for name in files if name.endswith(".py")):
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as f:
                    yield path, f.read()
            except (UnicodeDecodeError, OSError):
                continue


def prose_of(source):
    """The docstrings (over 40 characters) and the comments (over 20) of a Python source, as a list of texts."""
    import ast
    import tokenize
    try:
        nodes = ast.walk(ast.parse(source))
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, ValueError, tokenize.TokenError):
        return []  # the standard library's own tests hold a few files that are broken on purpose
    docstrings = [ast.get_docstring(node) for node in nodes if isinstance(
        node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    comments = [t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT]
    return [d for d in docstrings if d and len(d) > 40] + ["\n".join(c for c in comments if len(c) > 20)]


def pretraining_text(max_chars=0):
    """The standard library's prose in printable ASCII (every character of tiny Shakespeare, and a few more);
    max_chars > 0 stops after the file that reaches it."""
    import string
    parts, size = [], 0
    for _, source in stdlib_sources():
        found = [p for p in prose_of(source) if p]
        parts += found
        size += sum(map(len, found))
        if max_chars and size >= max_chars:
            break
    printable = set(string.printable) - set("\t\r\x0b\x0c")
    return "".join(c for c in "\n\n".join(p.replace("\t", "    ") for p in parts) if c in printable) + "\n"


def shared_lines(text, shakespeare):
    """The lines of 30 characters or more of the file shakespeare that the text holds."""
    with open(shakespeare, encoding="utf-8") as f:
        return sorted(line for line in set(f.read().splitlines()) if len(line) >= 30 and line in text)


SHAKESPEARE = os.path.join(ROOT, "input.txt")  # tiny Shakespeare, part of the repository


def write_pretraining_text(path, max_chars=0, shakespeare=SHAKESPEARE):
    """A text of several megabytes with no line of tiny Shakespeare, rebuilt offline from the Python running this
    (pretraining_text), checked against shakespeare and written atomically to path, in a folder made for it.
    Returns (characters, sha256 of the text)."""
    import hashlib
    plumbing.check_input_file(shakespeare)  # tiny Shakespeare, to check against (the repository's input.txt)
    text = pretraining_text(max_chars)
    shared = shared_lines(text, shakespeare)
    if shared:
        raise UserError(f"the pretraining text holds lines of {shakespeare}, e.g. {shared[0]!r}; "
                        "pass another text with --pretrain_text")
    plumbing.make_folder(os.path.dirname(os.path.abspath(path)), "pretrain_text")
    plumbing.write_file(path, [text.encode("utf-8")])
    return len(text), hashlib.sha256(text.encode()).hexdigest()


def bench_ex3(device, quick, work_dir, pretrain_text, input_file, save_dir):
    """EX3: pretrain on the pretraining text, finetune on tiny Shakespeare with --init_from, and train from scratch
    for the same steps; the laptop recipe's model on a CPU, the default model on CUDA. Returns markdown lines."""
    kind = "quick" if quick else "cuda" if device.startswith("cuda") else "cpu"
    pre_steps, steps, finetune_lr = EX3[kind]
    model = {"quick": TINY_GPT, "cuda": "", "cpu": gpt2.LAPTOP_RECIPE.replace(" --time_budget=600", "")}[kind]
    model += f" --device={device}"
    folder = os.path.join(save_dir or work_dir, "ex3")
    plumbing.make_folder(folder, "save_dir")
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


# EX4: a learner's modified copy of a lesson script against the original, in turn
def script_copy(path):
    """(the copy's path, the lesson it is a copy of): the lesson is named by the copy's own
    `SCRIPT = plumbing.Script("...", ...)` line."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserError(f"--script={path} " + ("is a folder" if os.path.isdir(path) else "does not exist")
                        + "; pass your copy of bigram.py, v2.py or gpt2.py, e.g. --script=my_v2.py")
    try:
        with open(path, encoding="utf-8") as f:
            found = re.search(r'^SCRIPT = plumbing\.Script\("(\w+)"', f.read(), re.MULTILINE)
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--script={path} cannot be read ({type(error).__name__}); check the file") from None
    if not found or found[1] not in LESSONS:
        raise UserError(f"--script={path} is not a copy of bigram.py, v2.py or gpt2.py (it has no line "
                        'SCRIPT = plumbing.Script("bigram", "v2" or "gpt2", ...)); copy a lesson script and change it')
    return path, found[1]


def compare_scripts(path, settings, rounds, device, input_file, work_dir):
    """Time the copy and the original in turn, rounds times (original first in odd rounds, the copy first in even
    ones), each as a whole process with the same settings (seed, steps, evaluation). Returns markdown lines."""
    copy, lesson = script_copy(path)
    scripts = {f"{lesson}.py": os.path.join(ROOT, f"{lesson}.py"), os.path.basename(copy): copy}
    if len(scripts) < 2:
        scripts = {f"{lesson}.py": scripts[f"{lesson}.py"], f"{lesson}.py (your copy)": copy}
    names = list(scripts)
    runs = {name: [] for name in names}  # name -> [(best val loss, wall seconds)]
    lines = ["| round | script | best val loss | wall time |", "|---|---|---|---|"]
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            out_dir = os.path.join(work_dir, f"round{round_ + 1}-{names.index(name)}")
            argv = [sys.executable, scripts[name], "--max_new_tokens=0", *settings, f"--input_file={input_file}",
                    f"--device={device}", f"--out_dir={out_dir}"]
            wall, _ = run_process(argv)
            best = min(r["val_loss"] for r in read_losses(os.path.join(out_dir, "losses.csv")))
            runs[name].append((best, wall))
            lines.append(f"| {round_ + 1} | {name} | {best:.4f} | {wall:.1f} s |")
            print(f"{name}, round {round_ + 1}: best val {best:.4f}, {wall:.1f} s", flush=True)
    (val_a, wall_a), (val_b, wall_b) = [[statistics.mean(column) for column in zip(*runs[name], strict=True)]
                                         for name in names]
    lines += [f"| mean | {name} | {val:.4f} | {wall:.1f} s |" for name, val, wall in
              ((names[0], val_a, wall_a), (names[1], val_b, wall_b))]
    shown = " ".join(settings) or "the defaults"
    return lines + ["", f"{names[1]} against {names[0]} ({shown}, {rounds} round(s)): best val loss "
                    f"{val_b - val_a:+.4f} (lower is better), time x{wall_b / wall_a:.2f} (the copy's wall time "
                    "over the original's).", ""]


class Parser(argparse.ArgumentParser):
    def error(self, message):  # a wrong option is one line and exit code 2, as in the lesson scripts
        raise UserError(f"{message}; python bench.py --help lists the options")


def parse_args(argv):
    """bench.py's options, and the --name=value settings it does not know (for --script and --sample_rung)."""
    parser = Parser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="tiny settings on the first 100,000 characters of the "
                        "text: checks that every section runs")
    parser.add_argument("--env", action="store_true", help="only print this machine, Python, torch and the other "
                        "packages, and the device and precision each script would pick: paste it into a bug report")
    parser.add_argument("--device", default="", help="cuda, mps or cpu (default: what the scripts pick)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--target", type=float, default=1.47, help="gpt2.py: report the time to this val loss")
    parser.add_argument("--save_dir", default="", help="keep each run's losses.csv, loss.png and ckpt.pt in "
                        "SAVE_DIR/<section>/, and the ladder's rungs and ladder.png in SAVE_DIR/ladder/")
    parser.add_argument("--input_file", default="", help="train on this text instead of input.txt")
    parser.add_argument("--pretrain_text", default="", help="ex3: pretrain on this text (built there from this "
                        "Python's standard library if it does not exist yet)")
    parser.add_argument("--plot", action="store_true", help="only draw the three lessons' val loss against time, "
                        "from RUNS_DIR/<script>/losses.csv, into PLOT_FILE")
    parser.add_argument("--runs_dir", default="out", help="--plot: the folder of the runs: out (the scripts' own "
                        "out/<script>/), or a --save_dir (default: out)")
    parser.add_argument("--plot_file", default="out/lessons.png", help="--plot: the PNG to write (written at "
                        "exactly this path)")
    parser.add_argument("--sample_rung", default="", help="sample the ladder rung saved in this folder; v2.py's "
                        "--prompt, --max_new_tokens, --temperature, --top_k and --seed apply")
    parser.add_argument("--script", default="", help="time your modified copy of a lesson script against the "
                        "original, in turn; every other --name=value (e.g. --max_iters=2000 --seed=1) goes to both")
    parser.add_argument("--rounds", type=int, default=2, help="--script: runs of each script, alternating which "
                        "goes first (default 2)")
    return parser.parse_known_args(argv)


def check_sections(only):
    sections = only.split(",")
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise UserError(f"unknown section {unknown[0]!r} in --only; choose from {', '.join(SECTIONS)}")
    return sections


def check_output_file(path, option):
    """A file bench.py will write: not a folder, in a folder that exists or can be made (made now)."""
    if os.path.isdir(path):
        raise UserError(f"--{option}={path} is a folder; name a file")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--{option}={path}: {folder} is a file, not a folder; choose another path")
    plumbing.make_folder(folder, option)


def check_pretrain_text(path):
    """--pretrain_text: a readable file, or a path where the pretraining text can be built."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(f"--pretrain_text={path} is not a file; pass a UTF-8 text, or a new path to build one at")
    if os.path.exists(path) and not os.access(path, os.R_OK):
        raise UserError(f"--pretrain_text={path} cannot be read (permission denied); check its permissions")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--pretrain_text={path}: {folder} is a file, not a folder; choose another path")


def main(argv):
    args, settings = parse_args(argv)
    if args.env:
        print(environment())
        return
    if args.sample_rung:
        sample_rung(args.sample_rung, args.device, settings)
        return
    if settings and not args.script:
        raise UserError(f"unknown option {settings[0]!r}; python bench.py --help lists the options (a lesson's "
                        "settings, such as --max_iters, go with --script)")
    if args.plot:
        plot_lessons(args.runs_dir, args.plot_file)
        return
    sections = check_sections(args.only)  # every path and setting is checked before any work
    device = pick_device(args.device)
    input_file = os.path.abspath(args.input_file or os.path.join(ROOT, "input.txt"))
    plumbing.check_input_file(input_file)
    if args.rounds < 1:
        raise UserError(f"--rounds must be 1 or more, got {args.rounds}")
    if args.script:
        script_copy(args.script)
    elif "ex3" in sections and args.pretrain_text:
        check_pretrain_text(args.pretrain_text)
    if args.save_dir:
        plumbing.make_folder(args.save_dir, "save_dir")
    with tempfile.TemporaryDirectory(prefix="bench-") as work_dir:
        if args.quick and not args.script:  # every section runs; a short text keeps each evaluation short
            input_file = args.input_file = shortened_text(input_file, work_dir)
        if args.script:
            lines = compare_scripts(args.script, settings, args.rounds, device, input_file, work_dir)
        else:
            lines = run_sections(args, sections, device, work_dir, input_file if args.input_file else "")
    print("\n".join(lines))


def shortened_text(path, work_dir, n_chars=100_000):
    """--quick: the first n_chars characters of the text, in work_dir, so that every evaluation is short."""
    with open(path, encoding="utf-8") as f:
        text = f.read(n_chars)
    short = os.path.join(work_dir, "quick.txt")
    plumbing.write_file(short, [text.encode("utf-8")])
    return short


def environment():
    """What a bug report needs: the system, Python, torch and its builds, the packages, and the choices the scripts
    make from what the device reports (the device; gpt2.py's precision and compile)."""
    import matplotlib
    import numpy
    import tqdm
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
    mps = "MPS built" if torch.backends.mps.is_built() else "no MPS"
    device = pick_device("")
    lines = [f"system: {platform.platform()} ({platform.machine()})", f"python: {platform.python_version()}",
             f"torch: {torch.__version__} ({cuda}, {mps}); cuda available: {torch.cuda.is_available()}, "
             f"mps available: {torch.backends.mps.is_available()}",
             f"numpy {numpy.__version__}, matplotlib {matplotlib.__version__}, tqdm {tqdm.__version__}",
             f"bigram.py, v2.py and gpt2.py pick: {device} ({describe(device)})"]
    try:
        dtype, why = gpt2.choose_precision("auto", device)
        lines.append(f"gpt2.py's precision: {gpt2.PRECISION_NAMES[dtype]} ({why})")
        use_compile, why = gpt2.choose_compile(True, device)
        lines.append(f"gpt2.py's compile: {'on' if use_compile else 'off'} ({why})")
    except Exception as error:  # a report must print even where a choice fails
        lines.append(f"gpt2.py's choices failed: {type(error).__name__}: {error}")
    return "\n".join(lines)


def plot_lessons(runs_dir, png_path):
    """The three lessons on one chart: val loss against training time, from each script's loss log."""
    if not os.path.isdir(runs_dir):
        raise UserError(f"--runs_dir={runs_dir} is not a folder; run the scripts first (or pass a --save_dir)")
    logs = []
    for script, folders in (("bigram", ["bigram"]), ("v2", ["v2"]), ("gpt2", ["laptop", "gpt2"])):
        paths = [os.path.join(runs_dir, folder, "losses.csv") for folder in folders]  # a user's out/<script>, or
        path = next((p for p in paths if os.path.exists(p)), None)  # bench.py --save_dir's <section> (laptop first)
        if path is None:
            print(f"{' or '.join(paths)} not found: {script}.py is left out of the chart")
        else:
            logs.append((script, path, read_losses(path)))
    if not logs:
        raise UserError(f"no loss log in {runs_dir}/<script>/losses.csv; run the scripts first")
    check_output_file(png_path, "plot_file")
    plt = plumbing.import_pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for script, path, rows in logs:
        best = min(r["val_loss"] for r in rows)
        recipe = " (laptop recipe)" if os.path.basename(os.path.dirname(path)) == "laptop" else ""
        ax.plot([r["elapsed_s"] for r in rows], [r["val_loss"] for r in rows], marker=".",
                label=f"{script}.py{recipe}: best val loss {best:.2f} after {rows[-1]['elapsed_s']:.0f} s")
    ax.set_xscale("symlog", linthresh=10)  # seconds: the first ten linear, then each tenfold the same width
    ax.set(xlabel="training time (s)", ylabel="val loss (nats per character)",
           title="The three lessons: val loss against training time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plumbing.save_figure(fig, png_path)
    drawn = ", ".join(f"{script}.py {min(r['val_loss'] for r in rows):.4f}" for script, _, rows in logs)
    print(f"{drawn}: chart in {png_path}")


def run_scripts(args, sections, device, work_dir, input_file, today):
    """The sections that run a lesson script as a whole process: (their results, the markdown lines of their table)."""
    runs = []
    for section, script in (("bigram", "bigram"), ("v2", "v2"), ("gpt2", "gpt2"), ("gpt2-fp16", "gpt2"),
                            ("laptop", "gpt2"), ("laptop-3min", "gpt2")):
        if section in sections:
            target = args.target if script == "gpt2" else None
            runs.append(bench_script(script, section, device, args.quick, target, work_dir, input_file))
            r = runs[-1]
            if args.save_dir:  # save_dir/<section>/: what --plot --runs_dir=save_dir reads, and --sample --out_dir
                keep_run(r["out_dir"], os.path.join(args.save_dir, section))
            print(f"{section}: {r['wall']:.1f} s, best val {r['best_val']:.4f}", flush=True)
    if not runs:
        return runs, []
    lines = ["| script | device | command | steps | wall time | time/step | tokens/s | MFU | best val | "
             f"time to val {args.target} | date |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        to_target = f"{r['to_target']:.1f} s" if r["to_target"] is not None else "–"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "–"
        lines.append(f"| {r['script']} | {r['device']} | `{r['command']}` | {r['steps']} | {r['wall']:.1f} s | "
                     f"{r['per_step'] * 1e3:.1f} ms | {r['tok_s']:,.0f} | {mfu} | {r['best_val']:.4f} | "
                     f"{to_target} | {today} |")
    return runs, lines + [""]


def run_sections(args, sections, device, work_dir, input_file):
    """Run the chosen sections; return the markdown lines of their tables."""
    today = datetime.date.today().isoformat()
    print(f"bench on {describe(device)}, torch {torch.__version__}, {today}\n", flush=True)
    runs, lines = run_scripts(args, sections, device, work_dir, input_file, today)
    if "bigram" in sections:
        text = input_file or os.path.join(ROOT, "input.txt")
        lines += [f"A bigram count table (the train split's pair counts, add-one smoothed) scores val loss "
                  f"{count_table_loss(text):.4f}: the floor for bigram.py.", ""]
    if "video-v2" in sections:
        iters, interval, eval_iters, n_sample = (20, 10, 5, 20) if args.quick else (5000, 100, 200, 500)
        text = input_file or os.path.join(ROOT, "input.txt")
        if args.quick:  # it only has to run: in this process, which saves a start-up
            start = time.time()
            with contextlib.redirect_stdout(io.StringIO()):
                video_v2_run(text, device, iters, interval, eval_iters, n_sample)
            wall_video = time.time() - start
        else:
            code = f"import bench; bench.video_v2_run({text!r}, {device!r}, {iters}, {interval}, {eval_iters})"
            wall_video, _ = run_process([sys.executable, "-c", code])
        ours = next((r for r in runs if r["script"] == "v2.py"), None) or bench_script(
            "v2", "v2", device, args.quick, None, work_dir, input_file)
        lines += ["| v2, same config | steps | wall time (whole process) |", "|---|---|---|",
                  f"| the video's code ({eval_iters}-batch eval every {interval} steps, plain AdamW) | {iters} | "
                  f"{wall_video:.1f} s |",
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


def keep_run(out_dir, folder):
    """Copy a run's loss log, plot and checkpoint into folder, each written atomically."""
    plumbing.make_folder(folder, "save_dir")
    for name in ("losses.csv", "loss.png", "ckpt.pt"):
        if os.path.exists(os.path.join(out_dir, name)):
            with open(os.path.join(out_dir, name), "rb") as f:
                plumbing.write_file(os.path.join(folder, name), [f.read()])


if __name__ == "__main__":
    for stream in (sys.stdout, sys.stderr):  # a console that cannot show a character prints "?" in its place
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        main(sys.argv[1:])
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
