"""bench.py --quick runs every section and prints its tables (the full bench is for humans and GPUs)."""

import os
import re
import signal
import subprocess
import sys

from conftest import ROOT, SCRIPTS, TEXT, run_in_process, tiny_args

ROW = re.compile(r"^\| (bigram|v2|gpt2)\.py \| CPU .*\| (\d+\.\d{4}) \| .* \| \d{4}-\d{2}-\d{2} \|$")


def test_quick_bench_runs_every_section_and_prints_its_tables(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT * 10, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread each, as in the other process tests
    proc = subprocess.Popen([sys.executable, "bench.py", "--quick", "--device=cpu", f"--input_file={text}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:  # the bench and the scripts it started: none may outlive the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    rows = [ROW.match(line) for line in out.splitlines() if ROW.match(line)]
    assert [row[1] for row in rows] == ["bigram", "v2", "gpt2", "gpt2", "gpt2"]  # gpt2, laptop, laptop-3min
    assert all(0 < float(row[2]) < 5 for row in rows)  # best val losses, in nats per character
    assert out.count("| speedup") == 4  # video-v2, video-gpt2 (two dropouts) and sampling
    assert "with the key/value cache" in out and "video-style" in out


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
