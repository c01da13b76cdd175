"""Measure the lessons and print markdown tables: every speed and loss figure in the README comes from here.

python bench.py                   every section (minutes on a GPU; on a CPU gpt2.py's default run alone
                                  takes hours, so choose sections with --only)
python bench.py --quick           tiny settings, under a minute on a 2-core CPU: checks that everything runs
python bench.py --only=v2,video-v2 --device=cpu     some sections only
python bench.py --plot            the three lessons' val loss against time, from out/<script>/losses.csv

Sections: bigram, v2, gpt2 (each script's default run, timed as a whole process), laptop (gpt2.py
with the laptop recipe, 10 minutes), laptop-3min (the same recipe in 3 minutes), sampling (1,000 new
tokens with and without the key/value cache), video-v2 (the video's own v2 code, same config, whole
process, and the ratio), video-gpt2 (training throughput of the video-style 10.8M model against
gpt2.py's, same config, and the ratio).
The video-style baselines use v2.py's model, which is the video's (one module per head, a mask buffer, a
masked softmax); only what the video does differently is here: its evaluation (200 random batches per split
every 100 steps), its get_batch and plain AdamW.
"""

import argparse
import csv
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ("bigram", "v2", "gpt2", "laptop", "laptop-3min", "sampling", "video-v2", "video-gpt2")
LAPTOP_3MIN = "--block_size=64 --batch_size=32 --learning_rate=3e-3 --min_lr=3e-4 --time_budget=180"
TINY_GPT = "--n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=8 --eval_interval=25"
QUICK = {  # tiny settings for --quick: seconds each on a 2-core CPU
    "bigram": "--max_iters=100 --eval_interval=50",
    "v2": "--max_iters=100 --eval_interval=50",
    "gpt2": TINY_GPT + " --max_iters=50",
    "laptop": TINY_GPT + " --time_budget=4",
    "laptop-3min": TINY_GPT + " --time_budget=4",
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: under a minute on a 2-core CPU")
    parser.add_argument("--device", default="", help="cuda, mps or cpu (default: what the scripts pick)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--target", type=float, default=1.47, help="gpt2.py: report the time to this val loss")
    parser.add_argument("--save_dir", default="", help="keep each run's losses.csv, loss.png and ckpt.pt in "
                        "SAVE_DIR/<section>/")
    parser.add_argument("--input_file", default="", help="train on this text instead of input.txt")
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
    for section, script in (("bigram", "bigram"), ("v2", "v2"), ("gpt2", "gpt2"), ("laptop", "gpt2"),
                            ("laptop-3min", "gpt2")):
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
    return lines


if __name__ == "__main__":
    main()
