"""bench.py: --quick runs every section, in two halves, and prints its tables (the full bench is for humans and GPUs);
its device choices are gpt2.py's; its ladder rungs sample; --script times a copy of a lesson; its refusals are
one line."""

import contextlib
import functools
import io
import math
import os
import re
import runpy
import shutil
import sys
import time

import pytest
import torch
from conftest import ROOT, SCRIPTS, TEXT, eval_lines, import_script, run_in_process, tiny_args

import plumbing

ROW = re.compile(r"^\| (bigram|v2|gpt2)\.py \| CPU .*\| (\d+\.\d{4}) \| .* \| \d{4}-\d{2}-\d{2} \|$")
LADDER_ROW = re.compile(r'^\| (.+) \("[^"]+"\) \| ([\d,]+) \| (\d+\.\d{4}) \| \d+\.\d s \| \S+ \|$')
EX3_ROW = re.compile(r"^\| (pretrain|finetune|from scratch) \| `(python gpt2\.py [^`]+)` \| \d+ \| [\d.]+ s \| "
                     r"(\d+\.\d{4}) \| \d+\.\d{4} \|$")
SCRIPT_SECTIONS = ["bigram", "v2", "gpt2", "gpt2-fp16", "laptop", "laptop-3min", "video-v2"]  # whole-process runs
OTHER_SECTIONS = ["sampling", "video-gpt2", "ladder", "ex3"]
LADDER = ["bigram table", "+ one self-attention head", "+ multi-head attention", "+ feed-forward",
          "+ blocks with residual connections", "+ LayerNorm (v2.py)"]


def bench(argv, capsys, monkeypatch):
    """`python bench.py argv`, run in this process (its scripts in their own, one thread each): (code, out, err)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return run_in_process("bench", argv, capsys, monkeypatch)


def run_here(monkeypatch, argv):
    """bench.run_process, in this process: `python script.py args` or `python -c code`, from the repository root;
    a script's refusal is bench.py's UserError, as in run_process. Saves a Python start-up per run."""
    bench_module = import_script("bench")
    monkeypatch.chdir(ROOT)
    out, err, code, t0 = io.StringIO(), io.StringIO(), 0, time.time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv[1] == "-c":
                exec(argv[2], {})
            else:
                monkeypatch.setattr(sys, "argv", argv[1:])
                runpy.run_path(os.path.join(ROOT, argv[1]), run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code
    if code == 2 and err.getvalue().startswith("error: "):
        raise bench_module.UserError(err.getvalue().strip().removeprefix("error: "))
    assert code in (0, None), err.getvalue()[-2000:]
    wall = time.time() - t0
    return wall, [(wall, line) for line in out.getvalue().splitlines()]


def quick_bench(tmp_path, sections, capsys, monkeypatch, *extra):
    """`python bench.py --quick --only=sections` on a small text, its scripts run in this process: its output; its
    files in tmp_path."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    bench_module = import_script("bench")
    monkeypatch.setattr(bench_module, "run_process", functools.partial(run_here, monkeypatch))
    bench_module.main(["--quick", "--device=cpu", f"--only={','.join(sections)}", f"--input_file={text}",
                       f"--save_dir={tmp_path}", *extra])
    return capsys.readouterr().out


def test_quick_bench_covers_every_section_in_these_tests():
    bench_module = import_script("bench")
    assert sorted(SCRIPT_SECTIONS + OTHER_SECTIONS) == sorted(bench_module.SECTIONS)


def test_quick_bench_runs_each_scripts_sections_and_prints_their_tables(tmp_path, capsys, monkeypatch):
    out = quick_bench(tmp_path, SCRIPT_SECTIONS, capsys, monkeypatch)
    rows = [ROW.match(line) for line in out.splitlines() if ROW.match(line)]
    assert [row[1] for row in rows] == ["bigram", "v2", "gpt2", "gpt2", "gpt2", "gpt2"]  # gpt2(-fp16), laptop(-3min)
    assert "| `python gpt2.py --dtype=float16 " in out
    assert all(0 < float(row[2]) < 5 for row in rows)  # best val losses, in nats per character
    assert out.count("| speedup") == 1  # video-v2
    assert sorted(os.listdir(tmp_path / "v2")) == ["ckpt.pt", "loss.png", "losses.csv"]  # kept with --save_dir


def test_quick_bench_runs_the_other_sections_and_its_ladder_rungs_sample_with_their_command(
        tmp_path, capsys, monkeypatch):
    pretrain = tmp_path / "pretrain.txt"  # another text with the same characters: tiny Shakespeare backwards
    pretrain.write_text(TEXT[::-1] * 2, encoding="utf-8")
    out = quick_bench(tmp_path, OTHER_SECTIONS, capsys, monkeypatch, f"--pretrain_text={pretrain}")
    assert out.count("| speedup") == 3  # video-gpt2 (two dropouts) and sampling
    assert "with the key/value cache" in out and "video-style" in out
    ladder = [LADDER_ROW.match(line) for line in out.splitlines() if LADDER_ROW.match(line)]
    assert [row[1] for row in ladder] == LADDER  # the video's steps, in its order
    assert all(math.isfinite(float(row[3])) and 0 < float(row[3]) < 5 for row in ladder)  # final val losses
    params = [int(row[2].replace(",", "")) for row in ladder]
    assert params == sorted(set(params))  # every step adds parameters
    v2 = import_script("v2")
    assert params[-1] == sum(p.numel() for p in v2.build_model(v2.HYPERPARAMETERS, len(set(TEXT))).parameters())
    assert "| val loss at step 10 |" in out
    ex3 = {m[1]: m for m in map(EX3_ROW.match, out.splitlines()) if m}
    assert list(ex3) == ["pretrain", "finetune", "from scratch"]
    assert "--init_from=ex3/pretrain " in ex3["finetune"][2] and "--input_file=ex3/pretrain.txt" in ex3["pretrain"][2]
    assert float(ex3["finetune"][3]) < float(ex3["from scratch"][3])  # step 0: pretrained weights beat a new model

    rungs = sorted(os.listdir(tmp_path / "ladder"))  # each rung's run, and the chart
    assert len(rungs) == 7 and rungs[0].startswith("1-bigram") and rungs[-1] == "ladder.png"
    for rung in rungs[:5]:  # each rung's checkpoint says what it is and the command that samples it
        checkpoint = torch.load(tmp_path / "ladder" / rung / "ckpt.pt", weights_only=True)
        assert checkpoint["script"] == "ladder" and checkpoint["what"].endswith("(a ladder rung of bench.py)")
        python, script, *argv = checkpoint["sample_with"].split()
        assert (python, script) == ("python", "bench.py")
        code, sample, err = bench([*argv, "--prompt=All:", "--max_new_tokens=30"], capsys, monkeypatch)
        assert code == 0, err
        what, text = sample.split("\n", 1)
        assert what == checkpoint["what"] and text.startswith("All:") and len(text.rstrip("\n")) == 4 + 30
    last = str(tmp_path / "ladder" / rungs[5])  # v2.py's own run: v2.py samples it
    code, sample, err = run_in_process("v2", ["--sample", f"--out_dir={last}", "--max_new_tokens=30", "--device=cpu"],
                                       capsys, monkeypatch)
    assert code == 0, err


def test_a_ladder_rung_is_refused_by_v2_py_in_one_line(tmp_path, capsys, monkeypatch):
    bench_module, v2 = import_script("bench"), import_script("v2")
    argv = tiny_args("v2", tmp_path, tmp_path / "text.txt")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    cfg = {**v2.HYPERPARAMETERS, **plumbing.parse_command_line(argv, v2.SCRIPT), "out_dir": str(tmp_path / "r")}
    bench_module.train_like_v2(functools.partial(bench_module.ladder_model, 2), cfg, "cpu")
    bench_module.mark_rung(cfg["out_dir"], 2, "+ multi-head attention")
    code, _, err = run_in_process("v2", ["--sample", f"--out_dir={tmp_path / 'r'}"], capsys, monkeypatch)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "ladder" in err, err
    assert "another version" not in err


def fake_runs(runs_dir, capsys, monkeypatch, tmp_path, text_file):
    """A tiny bigram.py run's loss log, in runs_dir/<script>/losses.csv for each of the three scripts."""
    code, _, err = run_in_process("bigram", tiny_args("bigram", tmp_path, text_file), capsys, monkeypatch)
    assert code == 0, err
    for script in SCRIPTS:
        os.makedirs(runs_dir / script, exist_ok=True)
        shutil.copy(tmp_path / "out" / "bigram" / "losses.csv", runs_dir / script / "losses.csv")


@pytest.mark.real_plots
def test_plot_draws_the_three_lessons_val_loss_against_training_time(tmp_path, text_file, capsys, monkeypatch):
    fake_runs(tmp_path / "runs", capsys, monkeypatch, tmp_path, text_file)
    png = tmp_path / "chart" / "lessons.png"
    code, out, err = bench(["--plot", f"--runs_dir={tmp_path / 'runs'}", f"--plot_file={png}"], capsys, monkeypatch)
    assert code == 0, err
    assert re.fullmatch(r"bigram\.py \d\.\d{4}, v2\.py \d\.\d{4}, gpt2\.py \d\.\d{4}: chart in .*\n", out)
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.real_plots
def test_plot_file_without_png_is_written_at_exactly_the_path_reported(tmp_path, text_file, capsys, monkeypatch):
    fake_runs(tmp_path / "runs", capsys, monkeypatch, tmp_path, text_file)
    chart = tmp_path / "chart"
    code, out, err = bench(["--plot", f"--runs_dir={tmp_path / 'runs'}", f"--plot_file={chart}"], capsys, monkeypatch)
    assert code == 0, err
    assert out.endswith(f"chart in {chart}\n") and chart.read_bytes().startswith(b"\x89PNG")
    assert sorted(os.listdir(tmp_path)) == ["chart", "out", "runs", "text.txt"]  # no chart.png beside it


@pytest.mark.parametrize("damage", ["step,val_loss\n1,not a number\n", "folder"])
def test_plot_refuses_a_damaged_loss_log_in_one_line(tmp_path, capsys, monkeypatch, damage):
    log = tmp_path / "runs" / "v2" / "losses.csv"
    if damage == "folder":
        log.mkdir(parents=True)
    else:
        log.parent.mkdir(parents=True)
        log.write_text(damage)
    code, _, err = bench(["--plot", f"--runs_dir={tmp_path / 'runs'}", f"--plot_file={tmp_path / 'c.png'}"],
                         capsys, monkeypatch)
    assert code == 2 and err.startswith(f"error: {log} ") and err.count("\n") == 1
    assert not (tmp_path / "c.png").exists()


REFUSALS = {  # bench.py's arguments (TMP: tmp_path) -> the words its one error line must hold
    "missing input": (["--input_file=TMP/none.txt"], "does not exist"),
    "folder as input": (["--input_file=TMP"], "is a directory"),
    "save_dir a file": (["--save_dir=TMP/text.txt/x"], "save_dir"),
    "unknown section": (["--only=v2,ladders"], "unknown section 'ladders'"),
    "unknown option": (["--max_iters=5"], "unknown option '--max_iters=5'"),
    "cuda without cuda": (["--device=cuda"], "--device=cuda was asked for"),
    "a script that is no copy": (["--script=TMP/text.txt"], "is not a copy of bigram.py, v2.py or gpt2.py"),
    "a copy from before plumbing.py": (["--script=TMP/old_v2.py"], 'it has no line SCRIPT = plumbing.Script("bigram", '
                                       '"v2" or "gpt2", ...)'),
    "rounds": (["--rounds=0", "--script=bigram.py"], "--rounds must be 1 or more"),
    "sample_rung no rung": (["--sample_rung=TMP"], "no ladder rung in"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bench_refuses_what_cannot_work_in_one_line_before_any_work(tmp_path, text_file, capsys, monkeypatch, case):
    argv, words = REFUSALS[case]
    old_copy = re.sub(r"^SCRIPT = plumbing\.Script\(.*$", 'SCRIPT = "v2"', (ROOT / "v2.py").read_text(encoding="utf-8"),
                      flags=re.MULTILINE)  # a copy with the line v2.py had before plumbing.py
    (tmp_path / "old_v2.py").write_text(old_copy, encoding="utf-8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [f"--save_dir={tmp_path / 'saved'}", "--quick"] + [arg.replace("TMP", str(tmp_path)) for arg in argv]
    code, out, err = bench(argv, capsys, monkeypatch)
    assert (code, out) == (2, "") and err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert not (tmp_path / "saved").exists()  # refused before any work: nothing made


def test_a_scripts_refusal_is_benchs_own_error_line(tmp_path, capsys, monkeypatch):
    copy = tmp_path / "my_bigram.py"
    shutil.copy(ROOT / "bigram.py", copy)
    # bigram.py runs first, in a process of its own, and refuses the setting bench.py passes on
    code, out, err = bench([f"--script={copy}", "--device=cpu", "--max_iters=-1"], capsys, monkeypatch)
    assert code == 2 and "failed" not in out + err  # exactly bigram.py's own line, not "bench: ... failed"
    assert err == "error: --max_iters=-1 is out of range: max_iters must be in [1, inf)\n"


def test_script_times_a_copy_against_the_original_in_turn_with_the_same_settings(tmp_path, capsys, monkeypatch):
    copy = tmp_path / "my_bigram.py"
    shutil.copy(os.path.join(ROOT, "bigram.py"), copy)  # unchanged: the two must score the very same val loss
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    argv = [f"--script={copy}", "--rounds=2", "--device=cpu", f"--input_file={tmp_path / 'text.txt'}",
            "--max_iters=10", "--eval_interval=5", "--eval_train_windows=8", "--block_size=8", "--seed=7"]
    bench_module = import_script("bench")
    monkeypatch.setattr(bench_module, "run_process", functools.partial(run_here, monkeypatch))  # no start-ups
    bench_module.main(argv)
    out = capsys.readouterr().out
    order = re.findall(r"^(\S+), round (\d): best val (\S+), ", out, re.MULTILINE)
    assert [(name, n) for name, n, _ in order] == [("bigram.py", "1"), ("my_bigram.py", "1"),
                                                   ("my_bigram.py", "2"), ("bigram.py", "2")]  # in turn
    assert len({val for _, _, val in order}) == 1  # same seed, steps and evaluation: the same val loss
    assert re.search(r"^\| mean \| bigram\.py \| \d\.\d{4} \| [\d.]+ s \|$", out, re.MULTILINE)
    assert re.search(r"^my_bigram\.py against bigram\.py \(--max_iters=10 .*--seed=7, 2 round\(s\)\): best val loss "
                     r"\+0\.0000 \(lower is better\), time x\d+\.\d\d ", out, re.MULTILINE)


def test_script_times_a_copy_kept_outside_the_repository_in_a_process_of_its_own(tmp_path, capsys, monkeypatch):
    copy = tmp_path / "my_v2.py"  # no plumbing.py beside it: bench.py gives its process the repository's
    v2_source = (ROOT / "v2.py").read_text(encoding="utf-8")
    assert "\nlearning_rate = 1e-3  #" in v2_source
    copy.write_text(v2_source.replace("\nlearning_rate = 1e-3  #", "\nlearning_rate = 1e-2  #"), encoding="utf-8")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    monkeypatch.delenv("PYTHONPATH", raising=False)  # nothing else leads the copy to plumbing.py
    bench_module, processes = import_script("bench"), []
    run_process = bench_module.run_process

    def copy_in_its_own_process(argv):  # v2.py itself in this process: a start-up saved
        if argv[1] == os.path.join(ROOT, "v2.py"):
            return run_here(monkeypatch, argv)
        processes.append(argv[1])
        return run_process(argv)
    monkeypatch.setattr(bench_module, "run_process", copy_in_its_own_process)
    bench_module.main([f"--script={copy}", "--rounds=1", "--device=cpu", f"--input_file={tmp_path / 'text.txt'}",
                       "--batch_size=4", "--block_size=16", "--n_embd=16", "--n_head=2", "--n_layer=1",
                       "--max_iters=4", "--eval_interval=2", "--eval_train_windows=16"])
    assert processes == [str(copy)]
    runs = re.findall(r"^(\S+), round 1: best val (\S+), ", capsys.readouterr().out, re.MULTILINE)
    assert [name for name, _ in runs] == ["v2.py", "my_v2.py"]
    assert runs[0][1] != runs[1][1]  # the copy's own learning rate: it was the copy that trained, not v2.py again


def record_throughput(monkeypatch, bench_module):
    """bench.throughput, replaced by a note of what it was given; models stay on the CPU."""
    calls = []
    monkeypatch.setattr(bench_module, "throughput", lambda model, optimizer, cfg, dev, steps, autocast, scaler=None:
                        calls.append((model, optimizer, autocast)) or 1000.0)
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: self)  # no such device here
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compiled.append(model) or model)
    return calls, compiled


@pytest.mark.parametrize("device", ["t4", "mps"])
def test_video_gpt2_trains_gpt2_as_gpt2_py_chooses_on_the_device(monkeypatch, device):
    bench_module, gpt2 = import_script("bench"), import_script("gpt2")
    calls, compiled = record_throughput(monkeypatch, bench_module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: device == "t4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (7, 5))  # a T4
    dev = {"t4": "cuda", "mps": "mps"}[device]
    rows, _ = bench_module.bench_video_gpt2(dev, True, 0.0)
    dtype = gpt2.choose_precision("auto", dev)[0]
    assert dtype == {"t4": "float16", "mps": "float32"}[device]
    (_, video_optimizer, _), (model, optimizer, autocast) = calls
    assert getattr(autocast, "fast_dtype", torch.float32) == getattr(torch, dtype)
    assert compiled == [] and not gpt2.choose_compile(True, dev)[0]  # 7.5 and MPS: the model runs as written
    assert optimizer.defaults["fused"] == gpt2.fused_adamw(dev) == (device == "t4")
    assert rows[1][1].startswith(gpt2.PRECISION_NAMES[dtype]) and ("fused AdamW" in rows[1][1]) == (device == "t4")


def test_sampling_draws_where_gpt2_py_samples_on_mps(monkeypatch):
    bench_module, gpt2 = import_script("bench"), import_script("gpt2")
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: self)  # no MPS here: stay on the CPU
    zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *args, device=None, **kwargs: zeros(*args, **kwargs))
    monkeypatch.setattr(bench_module, "sync", lambda device: None)
    generators, generate = [], gpt2.GPT.generate
    monkeypatch.setattr(gpt2.GPT, "generate", lambda self, idx, n, generator=None, use_cache=True: generators.append(
        generator) or generate(self, idx, n, generator=generator, use_cache=use_cache))
    speed = bench_module.bench_sampling("mps", True, 5)
    assert set(speed) == {True, False}
    drawn = [generator.device for generator in generators if generator is not None]
    assert drawn == [torch.device("cpu")] * 2 == [plumbing.sampling_device("mps")] * 2


def test_the_pretraining_text_refuses_a_text_that_shares_a_line_with_tiny_shakespeare(tmp_path):
    bench_module = import_script("bench")
    text = bench_module.pretraining_text(2000)
    line = next(line for line in text.splitlines() if len(line) >= 30)
    shakespeare = tmp_path / "input.txt"
    shakespeare.write_text(f"ROMEO:\n{line}\n", encoding="utf-8")
    with pytest.raises(bench_module.UserError, match="holds lines of"):
        bench_module.write_pretraining_text(str(tmp_path / "p" / "pretrain.txt"), 2000, str(shakespeare))
    assert not (tmp_path / "p").exists()
    shakespeare.write_text("ROMEO:\nA line that no docstring of the standard library holds.\n", encoding="utf-8")
    n_chars, digest = bench_module.write_pretraining_text(str(tmp_path / "p" / "pretrain.txt"), 2000, str(shakespeare))
    assert (tmp_path / "p" / "pretrain.txt").read_text(encoding="utf-8") == text and n_chars == len(text)


def test_each_rung_of_the_ladder_is_made_of_v2s_classes_and_maps_B_T_to_logits_B_T_V():
    bench_module, v2 = import_script("bench"), import_script("v2")
    cfg = {**v2.HYPERPARAMETERS, "n_embd": 16, "n_head": 2, "n_layer": 2, "block_size": 8}
    idx = torch.randint(10, (3, 8))  # (B, T)
    models = [bench_module.ladder_model(rung, cfg, 10) for rung in range(len(bench_module.LADDER))]
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
    bench_module, v2 = import_script("bench"), import_script("v2")
    cfg = {**v2.HYPERPARAMETERS, **plumbing.parse_command_line(argv, v2.SCRIPT), "out_dir": str(tmp_path / "rung")}
    last_rung = functools.partial(bench_module.ladder_model, len(bench_module.LADDER) - 1)
    rows, model = bench_module.train_like_v2(last_rung, cfg, "cpu")
    assert eval_lines(out) == [f"step {step}: train loss {train:.4f}, val loss {val:.4f}" for step, train, val, _
                               in rows]  # every evaluation, as v2.py printed it
    checkpoint = torch.load(tmp_path / "out" / "v2" / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == cfg["max_iters"]  # v2.py kept its final model: it was its best
    assert all(torch.equal(checkpoint["model"][name], weights) for name, weights in model.state_dict().items())
    rung = torch.load(tmp_path / "rung" / "ckpt.pt", weights_only=True)
    assert rung["best_val_loss"] == checkpoint["best_val_loss"]  # the same final val loss, to the last bit


def test_quick_trains_each_script_on_the_first_100000_characters_of_the_text(capsys, monkeypatch):
    bench_module, texts = import_script("bench"), []

    def record(argv):  # what each script of the section is given to train on, read while it exists
        path = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--input_file="))
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
        return run_here(monkeypatch, argv)
    monkeypatch.setattr(bench_module, "run_process", record)
    bench_module.main(["--quick", "--device=cpu", "--only=bigram"])
    with open(ROOT / "input.txt", encoding="utf-8") as f:
        assert texts == [f.read(100_000)]  # the val split of 10,000 characters: every evaluation is short
    capsys.readouterr()


@pytest.mark.parametrize("gpu", ["none", "t4"])
def test_env_reports_the_machine_the_packages_and_each_scripts_choices(gpu, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu == "t4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla T4")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    code, out, err = bench(["--env"], capsys, monkeypatch)
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines if ":" in line] == [
        "system", "python", "torch", "bigram.py, v2.py and gpt2.py pick", "gpt2.py's precision", "gpt2.py's compile"]
    assert lines[2].startswith(f"torch: {torch.__version__} (")
    assert lines[3].startswith("numpy ") and "matplotlib " in lines[3] and "tqdm " in lines[3]
    if gpu == "t4":
        assert lines[4] == "bigram.py, v2.py and gpt2.py pick: cuda (Tesla T4)"
        assert lines[5] == ("gpt2.py's precision: float16 autocast + gradient scaler (compute capability 7.5 has "
                            "no bf16)")
        assert lines[6].startswith("gpt2.py's compile: off (")
    else:
        assert lines[4].startswith("bigram.py, v2.py and gpt2.py pick: cpu (CPU")
        assert lines[5] == "gpt2.py's precision: float32 (auto trains in float32 on cpu)"
        assert lines[6] == "gpt2.py's compile: off (not on CUDA: cpu runs the model as written)"
