"""bench.py --quick runs every section and prints its tables (the full bench is for humans and GPUs)."""

import re
import subprocess
import sys

from conftest import ROOT, TEXT

ROW = re.compile(r"^\| (bigram|v2|gpt2)\.py \| CPU .*\| (\d+\.\d{4}) \| .* \| \d{4}-\d{2}-\d{2} \|$")


def test_quick_bench_runs_every_section_and_prints_its_tables(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT * 10, encoding="utf-8")
    proc = subprocess.run([sys.executable, "bench.py", "--quick", "--device=cpu", f"--input_file={text}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [ROW.match(line) for line in proc.stdout.splitlines() if ROW.match(line)]
    assert [row[1] for row in rows] == ["bigram", "v2", "gpt2", "gpt2", "gpt2"]  # gpt2, laptop, laptop-3min
    assert all(0 < float(row[2]) < 5 for row in rows)  # best val losses, in nats per character
    assert proc.stdout.count("| speedup") == 4  # video-v2, video-gpt2 (two dropouts) and sampling
    assert "with the key/value cache" in proc.stdout and "video-style" in proc.stdout
