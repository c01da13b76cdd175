"""bench.py --quick runs every section, in two halves, and prints its tables (the full bench is for humans and GPUs)."""

import functools
import math
import os
import re
import signal
import subprocess
import sys

import torch
from conftest import ROOT, SCRIPTS, TEXT, eval_lines, import_script, run_in_process, tiny_args

ROW = re.compile(r"^\| (bigram|v2|gpt2)\.py \| CPU .*\| (\d+\.\d{4}) \| .* \| \d{4}-\d{2}-\d{2} \|$")
LADDER_ROW = re.compile(r'^\| (.+) \("[^"]+"\) \| ([\d,]+) \| (\d+\.\d{4}) \| \d+\.\d s \| \S+ \|$')
EX3_ROW = re.compile(r"^\| (pretrain|finetune|from scratch) \| `(python gpt2\.py [^`]+)` \| \d+ \| [\d.]+ s \| "
                     r"(\d+\.\d{4}) \| \d+\.\d{4} \|$")
SCRIPT_SECTIONS = ["bigram", "v2", "gpt2", "gpt2-fp16", "laptop", "laptop-3min", "video-v2"]  # whole-process runs
OTHER_SECTIONS = ["sampling", "video-gpt2", "ladder", "ex3"]
LADDER = ["bigram table", "+ one self-attention head", "+ multi-head attention", "+ feed-forward",
          "+ blocks with residual connections", "+ LayerNorm (v2.py)"]


def quick_bench(tmp_path, sections):
    """`python bench.py --quick --only=sections` on a small text: its output; its files in tmp_path."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT * 10, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread each, as in the other process tests
    argv = [sys.executable, "bench.py", "--quick", "--device=cpu", f"--only={','.join(sections)}",
            f"--input_file={text}", f"--save_dir={tmp_path}"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:  # the bench and the scripts it started: none may outlive the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return out


def test_quick_bench_covers_every_section_in_these_tests():
    bench = import_script("bench")
    assert sorted(SCRIPT_SECTIONS + OTHER_SECTIONS) == sorted(bench.SECTIONS)


def test_quick_bench_runs_each_scripts_sections_and_prints_their_tables(tmp_path):
    out = quick_bench(tmp_path, SCRIPT_SECTIONS)
    rows = [ROW.match(line) for line in out.splitlines() if ROW.match(line)]
    assert [row[1] for row in rows] == ["bigram", "v2", "gpt2", "gpt2", "gpt2", "gpt2"]  # gpt2(-fp16), laptop(-3min)
    assert "| `python gpt2.py --dtype=float16 " in out
    assert all(0 < float(row[2]) < 5 for row in rows)  # best val losses, in nats per character
    assert out.count("| speedup") == 1  # video-v2


def test_quick_bench_runs_the_other_sections_and_prints_their_tables(tmp_path):
    out = quick_bench(tmp_path, OTHER_SECTIONS)
    assert out.count("| speedup") == 3  # video-gpt2 (two dropouts) and sampling
    assert "with the key/value cache" in out and "video-style" in out
    ladder = [LADDER_ROW.match(line) for line in out.splitlines() if LADDER_ROW.match(line)]
    assert [row[1] for row in ladder] == LADDER  # the video's steps, in its order
    assert all(math.isfinite(float(row[3])) and 0 < float(row[3]) < 5 for row in ladder)  # final val losses
    params = [int(row[2].replace(",", "")) for row in ladder]
    assert params == sorted(set(params))  # every step adds parameters
    v2 = import_script("v2")
    assert params[-1] == sum(p.numel() for p in v2.build_model(v2.HYPERPARAMETERS, len(set(TEXT))).parameters())
    assert "| val loss at step 20 |" in out
    saved = sorted(os.listdir(tmp_path / "ladder"))  # each rung's run, and the chart
    assert len(saved) == 7 and saved[0].startswith("1-bigram") and saved[-1] == "ladder.png"
    ex3 = {m[1]: m for m in map(EX3_ROW.match, out.splitlines()) if m}
    assert list(ex3) == ["pretrain", "finetune", "from scratch"]
    assert "--init_from=ex3/pretrain " in ex3["finetune"][2] and "--input_file=ex3/pretrain.txt" in ex3["pretrain"][2]
    assert float(ex3["finetune"][3]) < float(ex3["from scratch"][3])  # step 0: pretrained weights beat a new model


def test_plot_draws_the_three_lessons_val_loss_against_training_time(tmp_path, text_file, capsys, monkeypatch):
    for script in SCRIPTS:  # tiny runs, each writing tmp_path/out/<script>/losses.csv
        code, _, err = run_in_process(script, tiny_args(script, tmp_path, text_file), capsys, monkeypatch)
        assert code == 0, err
    png = tmp_path / "chart" / "lessons.png"
    argv = [sys.executable, "bench.py", "--plot", f"--runs_dir={tmp_path / 'out'}", f"--plot_file={png}"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"bigram\.py \d\.\d{4}, v2\.py \d\.\d{4}, gpt2\.py \d\.\d{4}: chart in .*\n", proc.stdout)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_each_rung_of_the_ladder_is_made_of_v2s_classes_and_maps_B_T_to_logits_B_T_V():
    bench, v2 = import_script("bench"), import_script("v2")
    cfg = {**v2.HYPERPARAMETERS, "n_embd": 16, "n_head": 2, "n_layer": 2, "block_size": 8}
    idx = torch.randint(10, (3, 8))  # (B, T)
    models = [bench.ladder_model(rung, cfg, 10) for rung in range(len(bench.LADDER))]
    assert [model(idx)[0].shape for model in models] == [(3, 8, 10)] * len(models)  # logits (B, T, V)
    head, multi, (attend, feed), blocks, gpt = [model.blocks for model in models[1:]]
    assert isinstance(head, v2.Head) and head(torch.randn(3, 8, 16)).shape == (3, 8, 16)  # (B, T, hs=C)
    assert isinstance(multi, v2.MultiHeadAttention) and len(multi.heads) == 2
    assert isinstance(attend, v2.MultiHeadAttention) and isinstance(feed, v2.FeedForward)
    assert [type(block) for block in blocks] == [v2.Block] * 2
    assert all(isinstance(block.ln1, torch.nn.Identity) and isinstance(block.ln2, torch.nn.Identity)
               for block in blocks)
    assert [isinstance(model.ln_f, torch.nn.Identity) for model in models[1:]] == [True] * 4 + [False]
    assert [type(block.ln1) for block in gpt] == [torch.nn.LayerNorm] * 2  # the last rung is v2.py's model


def test_the_ladders_last_rung_is_v2_py_trained_the_same_way(tmp_path, text_file, capsys, monkeypatch):
    argv = tiny_args("v2", tmp_path, text_file)
    code, out, err = run_in_process("v2", argv, capsys, monkeypatch)
    assert code == 0, err
    bench, v2 = import_script("bench"), import_script("v2")
    cfg = {**v2.HYPERPARAMETERS, **v2.parse_command_line(argv, v2.HYPERPARAMETERS), "out_dir": str(tmp_path / "rung")}
    last_rung = functools.partial(bench.ladder_model, len(bench.LADDER) - 1)
    rows, model = bench.train_like_v2(last_rung, cfg, "cpu")
    assert eval_lines(out) == [f"step {step}: train loss {train:.4f}, val loss {val:.4f}" for step, train, val, _
                               in rows]  # every evaluation, as v2.py printed it
    checkpoint = torch.load(tmp_path / "out" / "v2" / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == cfg["max_iters"]  # v2.py kept its final model: it was its best
    assert all(torch.equal(checkpoint["model"][name], weights) for name, weights in model.state_dict().items())
    rung = torch.load(tmp_path / "rung" / "ckpt.pt", weights_only=True)
    assert rung["best_val_loss"] == checkpoint["best_val_loss"]  # the same final val loss, to the last bit
