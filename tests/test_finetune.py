"""gpt2.py --init_from: pretrain on one text, finetune on another (the video's exercise 3)."""

import math
import shutil

import pytest
import torch
from conftest import TEXT, ctrl_c_after, eval_lines, import_script, run_in_process, tiny_args, val_losses

gpt2 = import_script("gpt2")
# the pretraining text: another text, whose characters include every one of TEXT's
PRETRAIN_TEXT = ("The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow!\n"
                 "ALL CITIZENS OF BAYFIELD: 1 + 2 = 3? Yes; and we proceed any further, famished.\n") * 60


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny model pretrained on PRETRAIN_TEXT: its folder, and TEXT (the finetuning text) beside it."""
    base = tmp_path_factory.mktemp("pretrained")
    (base / "pretrain.txt").write_text(PRETRAIN_TEXT, encoding="utf-8")
    (base / "text.txt").write_text(TEXT, encoding="utf-8")
    assert set(TEXT) < set(PRETRAIN_TEXT)
    gpt2.main(tiny_args("gpt2", base, base / "pretrain.txt", "--max_iters=150", "--eval_interval=50",
                        "--learning_rate=3e-3", "--out_dir=" + str(base / "pre")))
    return base


def finetune(base, tmp_path, capsys, monkeypatch, *extra, text=None):
    """`python gpt2.py --init_from=<pretrained> <tiny config> extra` in this process: (exit code, out, err)."""
    argv = tiny_args("gpt2", tmp_path, text or base / "text.txt", f"--init_from={base / 'pre'}",
                     "--learning_rate=3e-4", *extra)
    return run_in_process("gpt2", argv, capsys, monkeypatch)


def test_finetuning_starts_from_the_pretrained_weights_not_from_ln_vocab_size(pretrained, tmp_path, capsys,
                                                                              monkeypatch):
    code, out, err = finetune(pretrained, tmp_path, capsys, monkeypatch)
    assert code == 0, err
    saved = torch.load(pretrained / "pre" / "ckpt.pt", weights_only=True)
    model = gpt2.build_model(saved["config"], len(saved["chars"]))
    model.load_state_dict(saved["model"])
    stoi = {ch: i for i, ch in enumerate(saved["chars"])}
    data = torch.tensor(gpt2.encode(TEXT, stoi)).numpy()
    n = int(0.9 * len(data))
    val = gpt2.eval_windows(data[n:], saved["config"]["block_size"], 0, "cpu")
    expected = gpt2.estimate_loss(model, {"val": val}, 128)["val"]  # the pretrained model on the new text
    first = val_losses(out)[0]
    assert first == pytest.approx(expected, abs=1e-4)
    assert first < math.log(len(saved["chars"])) - 0.3  # far from a new model's uniform guess
    assert val_losses(out)[-1] < first  # and finetuning lowers it


def test_finetuning_starts_the_optimizer_and_the_schedule_at_step_0(pretrained, tmp_path, capsys, monkeypatch):
    code, out, err = finetune(pretrained, tmp_path, capsys, monkeypatch, "--max_iters=20", "--warmup_iters=5")
    assert code == 0, err
    assert eval_lines(out)[0].startswith("step 0:") and "resuming" not in out
    checkpoint = torch.load(tmp_path / "out" / "gpt2" / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 20
    steps = {int(state["step"]) for state in checkpoint["optimizer"]["state"].values()}
    assert steps == {20}  # AdamW counted this run's 20 updates only, not the pretraining's 150
    first_lr = (tmp_path / "out" / "gpt2" / "losses.csv").read_text().splitlines()[1].split(",")[-1]
    assert float(first_lr) == pytest.approx(3e-4 / 5)  # warming up again, from this run's learning rate


def test_the_finetuned_checkpoint_records_its_pretrained_model_and_keeps_its_vocabulary(pretrained, tmp_path, capsys,
                                                                                       monkeypatch):
    code, _, err = finetune(pretrained, tmp_path, capsys, monkeypatch)
    assert code == 0, err
    checkpoint = torch.load(tmp_path / "out" / "gpt2" / "ckpt.pt", weights_only=True)
    assert checkpoint["config"]["init_from"] == str(pretrained / "pre")
    assert checkpoint["chars"] == "".join(sorted(set(PRETRAIN_TEXT)))  # the pretrained model's, not TEXT's own


def test_a_finetuning_run_resumes_exactly_from_its_own_checkpoint(pretrained, tmp_path, capsys, monkeypatch):
    k = 20

    def run(name, *extra):
        code, out, err = finetune(pretrained, tmp_path / name, capsys, monkeypatch, f"--max_iters={2 * k}",
                                  f"--eval_interval={k}", *extra)
        assert code == 0, err
        return eval_lines(out)
    uninterrupted = run("whole")
    pretrained_copy = tmp_path / "pre_copy"
    shutil.copytree(pretrained / "pre", pretrained_copy)
    argv = tiny_args("gpt2", tmp_path / "resumed", pretrained / "text.txt", f"--init_from={pretrained_copy}",
                     "--learning_rate=3e-4", f"--max_iters={2 * k}", f"--eval_interval={k}")
    ctrl_c_after(monkeypatch, k)
    code, _, err = run_in_process("gpt2", argv, capsys, monkeypatch)
    assert code == 130, err
    shutil.rmtree(pretrained_copy)  # the resumed run needs only its own checkpoint
    argv = tiny_args("gpt2", tmp_path / "resumed", pretrained / "text.txt", f"--max_iters={2 * k}",
                     f"--eval_interval={k}", "--resume")  # without --init_from
    code, out, err = run_in_process("gpt2", argv, capsys, monkeypatch)
    assert code == 0, err
    assert f"resuming from step {k}" in out
    assert eval_lines(out) == uninterrupted[1:]


def test_a_finetuned_model_samples(pretrained, tmp_path, capsys, monkeypatch):
    code, _, err = finetune(pretrained, tmp_path, capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run_in_process("gpt2", [*tiny_args("gpt2", tmp_path, "unused.txt"), "--sample", "--prompt=First"],
                                    capsys, monkeypatch)
    assert code == 0, err
    assert out.split("\n", 1)[1].startswith("First") and len(out.split("\n", 1)[1]) > len("First") + 10


@pytest.mark.parametrize("mistake, expected", [
    (lambda base, tmp: ["--input_file=" + str(tmp / "other.txt")],
     "other.txt has 2 character(s) that the model of --init_from has never seen: 'Ωω'; finetune on a text without "
     "them, or pretrain on one that has them"),
    (lambda base, tmp: ["--out_dir=" + str(base / "pre")],
     "is the folder of --init_from: the new run would overwrite the pretrained model; choose another --out_dir"),
    (lambda base, tmp: ["--init_from=" + str(tmp)], "no saved model at {tmp}/ckpt.pt"),
    (lambda base, tmp: ["--init_from=" + str(base / "v2")], "is not a checkpoint of gpt2.py (it is from v2.py)"),
    (lambda base, tmp: ["--resume"], "--init_from starts a new run from a saved model, so it cannot go with --resume"),
    (lambda base, tmp: ["--sample"], "--init_from starts a new run from a saved model, so it cannot go with --resume"),
    (lambda base, tmp: ["--n_embd=32"], "--n_embd=32 does not match the saved model (n_embd=16 in "),
], ids=["new characters", "out_dir is init_from", "no checkpoint", "another script", "with resume", "with sample",
        "another model size"])
def test_a_finetuning_mistake_ends_with_one_error_line(pretrained, tmp_path, capsys, monkeypatch, mistake, expected):
    (tmp_path / "other.txt").write_text(TEXT + "Ωω\n", encoding="utf-8")
    if not (pretrained / "v2" / "ckpt.pt").exists():
        code, _, err = run_in_process("v2", tiny_args("v2", pretrained, pretrained / "text.txt",
                                                      f"--out_dir={pretrained / 'v2'}"), capsys, monkeypatch)
        assert code == 0, err
    code, out, err = finetune(pretrained, tmp_path, capsys, monkeypatch, *mistake(pretrained, tmp_path))
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert expected.replace("{tmp}", str(tmp_path)) in lines[0]
    if "--init_from=" in lines[0]:
        assert lines[0].startswith("error: --init_from=")  # the loading errors say which option they are about
