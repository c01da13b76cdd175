"""Choices made from what the device reports (precision, torch.compile, sampling and attention on MPS, running out of
memory), tested with the device mocked: no T4, V100 or Mac is here to try them. And the float16 path, for real, on
the CPU. The rules gpt2.py has alone are tested on gpt2.py, plumbing.py's rules once, and what each script does itself
(sampling, a model with block_size 1) on each script."""

import re
from types import SimpleNamespace

import pytest
import torch
from conftest import (
    SCRIPTS,
    ctrl_c_after,
    eval_lines,
    import_script,
    out_of_memory_in_the_loss,
    run_in_process,
    tiny_args,
    val_losses,
)
from torch.nn import functional as F

import plumbing

gpt2 = import_script("gpt2")


@pytest.fixture
def gpu(monkeypatch):
    """gpu(major, minor): torch.cuda reports a GPU of that compute capability, whose is_bf16_supported() says True
    (as a T4's does: it counts emulated bf16) and whose name is 'Tesla T4'."""
    def report(major, minor):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    return report


# --- precision ---
@pytest.mark.parametrize("capability, dtype, why", [
    ((9, 0), "bfloat16", "compute capability 9.0 has bf16"),  # H100, H200
    ((8, 9), "bfloat16", "compute capability 8.9 has bf16"),  # RTX 40xx, L4
    ((8, 6), "bfloat16", "compute capability 8.6 has bf16"),  # RTX 30xx, A10
    ((8, 0), "bfloat16", "compute capability 8.0 has bf16"),  # A100
    ((7, 5), "float16", "compute capability 7.5 has no bf16"),  # T4 (Colab), RTX 20xx, GTX 16xx
    ((7, 0), "float16", "compute capability 7.0 has no bf16"),  # V100
    ((6, 1), "float32", "compute capability 6.1 has no float16 tensor cores"),  # GTX 10xx
])
def test_auto_precision_follows_the_compute_capability_not_is_bf16_supported(gpu, capability, dtype, why):
    gpu(*capability)
    assert torch.cuda.is_bf16_supported()  # a T4 says so too: the rule must not ask it
    assert gpt2.choose_precision("auto", "cuda") == (dtype, why)


@pytest.mark.parametrize("dev", ["mps", "cpu"])
def test_auto_precision_is_float32_on_mps_and_the_cpu(dev):
    assert gpt2.choose_precision("auto", dev) == ("float32", f"auto trains in float32 on {dev}")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_an_explicit_dtype_is_honoured_on_the_cpu(dtype):
    assert gpt2.choose_precision(dtype, "cpu") == (dtype, f"--dtype={dtype}")


@pytest.mark.parametrize("dev, capability, dtype, can", [
    ("cuda", (7, 5), "bfloat16", "float16, float32"),
    ("cuda", (6, 1), "bfloat16", "float16, float32"),
    ("mps", None, "float16", "float32"),
    ("mps", None, "bfloat16", "float32"),
])
def test_a_dtype_the_device_cannot_run_is_an_error_naming_what_it_can(gpu, dev, capability, dtype, can):
    if capability:
        gpu(*capability)
    with pytest.raises(plumbing.UserError, match=rf"^--dtype={dtype} cannot train on this device .*it can use {can}, "):
        gpt2.choose_precision(dtype, dev)


def test_a_dtype_that_is_no_dtype_ends_with_one_line_naming_the_choices(tmp_path, text_file, capsys, monkeypatch):
    code, out, err = run_in_process("gpt2", tiny_args("gpt2", tmp_path, text_file, "--dtype=fp16"), capsys, monkeypatch)
    assert code == 2
    assert err.strip().splitlines() == ["error: --dtype must be one of auto, bfloat16, float16, float32, got 'fp16'"]


def test_the_precision_is_chosen_applied_and_told_in_one_call(capsys):
    autocast, scaler = gpt2.set_up_precision("float16", "cpu")
    assert capsys.readouterr().out == "precision: float16 autocast + gradient scaler (--dtype=float16)\n"
    assert scaler.is_enabled() and autocast.fast_dtype == torch.float16


@pytest.mark.parametrize("dtype, scaled", [("bfloat16", False), ("float16", True), ("float32", False)])
def test_only_float16_needs_a_gradient_scaler(dtype, scaled):
    assert gpt2.gradient_scaler(dtype, "cpu").is_enabled() == scaled


def test_float32_runs_without_autocast_and_the_half_dtypes_with_it():
    assert isinstance(gpt2.autocast_context("float32", "cpu"), gpt2.nullcontext)
    for dtype in ("bfloat16", "float16"):
        context = gpt2.autocast_context(dtype, "cpu")
        assert isinstance(context, torch.autocast) and context.fast_dtype == getattr(torch, dtype)


@pytest.mark.parametrize("dev, fused", [("cuda", True), ("cuda:1", True), ("cpu", True), ("mps", False)])
def test_adamw_is_fused_except_on_mps(dev, fused):
    assert gpt2.fused_adamw(dev) == fused


# --- torch.compile ---
BELOW_8 = "Triton fully supports only 8.0 and above"


@pytest.mark.parametrize("requested, asked, dev, capability, triton, on, why", [
    (True, False, "cuda", (9, 0), True, True, "compute capability 9.0, triton"),  # H100, H200
    (True, False, "cuda", (8, 0), True, True, "compute capability 8.0, triton"),  # A100
    (True, False, "cuda", (7, 5), True, False, f"compute capability 7.5: {BELOW_8}; add --compile to try it"),  # T4
    (True, True, "cuda", (7, 5), True, True, f"compute capability 7.5, triton: --compile given, although {BELOW_8}"),
    (True, False, "cuda", (7, 0), True, False, f"compute capability 7.0: {BELOW_8}; add --compile to try it"),  # V100
    (True, True, "cuda", (6, 1), True, False, "compute capability 6.1 is below the 7.0 that Triton needs"),
    (True, False, "cuda", (8, 6), False, False, "triton is not installed"),  # e.g. Windows
    (True, True, "cuda", (7, 5), False, False, "triton is not installed"),
    (False, True, "cuda", (9, 0), True, False, "--compile=False"),
    (True, True, "mps", None, True, False, "not on CUDA: mps runs the model as written"),
    (True, True, "cpu", None, True, False, "not on CUDA: cpu runs the model as written"),
])
def test_compile_by_default_from_8_0_and_on_7_x_only_when_asked(gpu, monkeypatch, requested, asked, dev, capability,
                                                                  triton, on, why):
    if capability:
        gpu(*capability)
    find_spec = gpt2.importlib.util.find_spec
    monkeypatch.setattr(gpt2.importlib.util, "find_spec",
                        lambda name, *args: (object() if triton else None) if name == "triton" else find_spec(name))
    assert gpt2.choose_compile(requested, dev, asked) == (on, why)


# --- float16 on the CPU, for real ---
FORWARD_BACKWARD, MICRO_BATCHES, STEPPED = gpt2.forward_backward, gpt2.micro_batches, plumbing.Run.stepped


def float16_run(tmp_path, text_file, capsys, monkeypatch, name, *extra, overflow_at=None, ctrl_c_after_step=None):
    """A tiny gpt2.py --dtype=float16 run in this process: (exit code, output, the weights after each step).
    overflow_at: the step whose gradients get an inf; ctrl_c_after_step: the step after which Ctrl-C is pressed."""
    now, weights = {}, {}

    def micro_batches(data, cfg, step, *args):
        now["step"] = step
        return MICRO_BATCHES(data, cfg, step, *args)

    def forward_backward(model, micro_batches, autocast, scaler, ddp=False):
        loss = FORWARD_BACKWARD(model, micro_batches, autocast, scaler, ddp)
        if now["step"] == overflow_at:
            next(model.parameters()).grad[0, 0] = float("inf")
        return loss

    def stepped(run, step, loss, **fields):
        weights[step] = [p.detach().clone() for p in run.model.parameters()]
        return STEPPED(run, step, loss, **fields)
    monkeypatch.setattr(gpt2, "micro_batches", micro_batches)
    monkeypatch.setattr(gpt2, "forward_backward", forward_backward)
    monkeypatch.setattr(plumbing.Run, "stepped", stepped)
    if ctrl_c_after_step is not None:
        ctrl_c_after(monkeypatch, ctrl_c_after_step)
    argv = tiny_args("gpt2", tmp_path / name, text_file, "--dtype=float16", "--max_iters=40", "--eval_interval=20",
                     *extra)
    code = 0
    try:
        gpt2.main(argv)  # this module's functions, so that the patches above apply
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out + err, weights


def test_float16_on_the_cpu_trains_and_skips_a_step_whose_gradients_overflowed(tmp_path, text_file, capsys,
                                                                               monkeypatch):
    code, output, weights = float16_run(tmp_path, text_file, capsys, monkeypatch, "run", overflow_at=5)
    assert code == 0, output
    assert "precision: float16 autocast + gradient scaler (--dtype=float16)" in output
    losses = val_losses(output)
    assert losses[-1] < losses[0] - 0.1  # the val loss falls
    unchanged = [step for step in range(1, 40) if all(torch.equal(a, b) for a, b in zip(weights[step - 1],
                                                                                          weights[step], strict=True))]
    assert unchanged == [5]  # the overflowed step left every weight as it was; every other step moved them
    assert re.search(r"skipped=1\b", output)  # and the progress bar counts it
    norms = [float(norm) for norm in re.findall(r"norm=([^,\]]+)", output)]
    assert norms and max(norms) < 10  # true gradient norms, unscaled before clipping (scaled, they would be ~1e4)
    checkpoint = torch.load(tmp_path / "run" / "out" / "gpt2" / "ckpt.pt", weights_only=True)
    assert checkpoint["scaler"]["scale"] == 2.0 ** 15  # the scaler halved its scale, from 2^16, after the overflow


def test_float16_resumes_exactly_with_the_scalers_state(tmp_path, text_file, capsys, monkeypatch):
    code, uninterrupted, _ = float16_run(tmp_path, text_file, capsys, monkeypatch, "whole", overflow_at=5)
    assert code == 0, uninterrupted
    code, output, _ = float16_run(tmp_path, text_file, capsys, monkeypatch, "resumed", overflow_at=5,
                                  ctrl_c_after_step=24)  # after the checkpoint of step 20
    assert code == 130, output
    saved = torch.load(tmp_path / "resumed" / "out" / "gpt2" / "ckpt.pt", weights_only=True)
    assert saved["step"] == 20 and saved["scaler"]["scale"] == 2.0 ** 15
    code, resumed, _ = float16_run(tmp_path, text_file, capsys, monkeypatch, "resumed", "--resume")
    assert code == 0, resumed
    assert eval_lines(resumed) == eval_lines(uninterrupted)[1:]  # step 20, evaluated again, then step 40
    final = {name: torch.load(tmp_path / name / "out" / "gpt2" / "ckpt.pt", weights_only=True)["scaler"]
             for name in ("whole", "resumed")}
    assert final["resumed"] == final["whole"]  # the scale carried on from the checkpoint, not from 2^16


def test_a_checkpoint_without_a_scaler_resumes_in_float16(tmp_path, text_file, capsys, monkeypatch):
    code, output, _ = float16_run(tmp_path, text_file, capsys, monkeypatch, "run", "--max_iters=20")
    assert code == 0, output
    path = tmp_path / "run" / "out" / "gpt2" / "ckpt.pt"
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["scaler"]  # a checkpoint without the scaler's entry, e.g. one another program wrote
    torch.save(checkpoint, path)
    code, output, _ = float16_run(tmp_path, text_file, capsys, monkeypatch, "run", "--resume", "--max_iters=30")
    assert code == 0, output
    assert "resuming from step 20" in output and eval_lines(output)[-1].startswith("step 30:")


# --- sampling and attention on MPS ---
@pytest.mark.parametrize("dev, where", [("mps", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), ("cpu", "cpu")])
def test_the_next_token_is_drawn_on_the_cpu_for_mps_and_on_the_device_elsewhere(dev, where):
    assert plumbing.sampling_device(dev) == torch.device(where)


@pytest.mark.parametrize("script", SCRIPTS)
def test_sampling_draws_where_sampling_device_says_and_returns_to_the_models_device(script, monkeypatch):
    """The probabilities go where sampling_device says, and the drawn token comes back to the logits' device. The
    meta device stands in for the other device: a tensor can move from the CPU to meta, but not back, so the token
    drawn there is a stand-in that records where it is sent."""
    module, asked, drawn_on, sent_to = import_script(script), [], [], []

    class DrawnOnMeta:
        def to(self, device):
            sent_to.append(torch.device(device))
            return torch.zeros(3, 1, dtype=torch.long, device=device)

    def spy_multinomial(probs, num_samples, generator=None):
        drawn_on.append(probs.device)
        return DrawnOnMeta()
    monkeypatch.setattr(torch, "multinomial", spy_multinomial)
    monkeypatch.setattr(plumbing, "sampling_device", lambda device: asked.append(device) or torch.device("meta"))
    idx = module.sample_next(torch.randn(3, 65), 1.0, 0, None)  # CPU logits, drawn on meta
    assert asked == [torch.device("cpu")] and drawn_on == [torch.device("meta")]  # the probabilities went there
    assert sent_to == [torch.device("cpu")] and idx.shape == (3, 1) and idx.device == torch.device("cpu")  # and back


@pytest.mark.parametrize("script", SCRIPTS)
def test_sampling_keeps_top_k_and_draws_from_the_softmax_of_the_logits(script, monkeypatch):
    module, drawn = import_script(script), []
    multinomial = torch.multinomial

    def spy_multinomial(probs, *args, **kwargs):
        drawn.append(probs.dtype)
        return multinomial(probs, *args, **kwargs)
    monkeypatch.setattr(torch, "multinomial", spy_multinomial)
    logits = torch.randn(3, 65, dtype=torch.float64)
    idx = module.sample_next(logits, 1.0, 10, torch.Generator().manual_seed(0))
    assert drawn == [torch.float64] and idx.shape == (3, 1)  # one draw, from the softmax of these logits
    assert all(i in logits[b].topk(10).indices for b, i in enumerate(idx[:, 0]))


def test_contiguous_on_mps_copies_on_mps_only():
    class FakeMPSTensor:
        device = SimpleNamespace(type="mps")

        def contiguous(self):
            return "contiguous copy"
    assert gpt2.contiguous_on_mps(FakeMPSTensor(), FakeMPSTensor()) == ("contiguous copy", "contiguous copy")
    q = torch.randn(2, 3, 4, 5).transpose(1, 2)  # a transposed view, as CausalSelfAttention makes
    k = torch.randn(2, 4, 3, 5)
    assert all(a is b for a, b in zip(gpt2.contiguous_on_mps(q, k), (q, k), strict=True))  # CUDA and CPU: untouched


@pytest.mark.parametrize("path", ["training", "filling the cache", "one token with the cache", "two with the cache"])
def test_the_fused_attention_receives_what_contiguous_on_mps_returns(monkeypatch, path):
    made, received = [], []

    def recorder(*tensors):  # stands in for the MPS copy: new tensors, the same values
        made.append(tuple(t.clone() for t in tensors))
        return made[-1]
    attention = F.scaled_dot_product_attention

    def checked_attention(q, k, v, **kwargs):
        received.append((q, k, v))
        return attention(q, k, v, **kwargs)
    monkeypatch.setattr(gpt2, "contiguous_on_mps", recorder)
    monkeypatch.setattr(F, "scaled_dot_product_attention", checked_attention)
    config = gpt2.GPTConfig(vocab_size=11, block_size=8, n_embd=8, n_head=2, n_layer=1, dropout=0.0)
    attn = gpt2.CausalSelfAttention(config).eval()
    cache = None if path == "training" else gpt2.KVCache(config, 2, "cpu", torch.float32)
    if path in ("one token with the cache", "two with the cache"):
        attn(torch.randn(2, 3, 8), cache)
        cache.length = 3
        made.clear(), received.clear()
    attn(torch.randn(2, 2 if path == "two with the cache" else 1 if "one" in path else 4, 8), cache)
    assert len(made) == len(received) == 1
    assert all(a is b for a, b in zip(received[0], made[0], strict=True))  # q, k, v: each the recorder's copy


@pytest.mark.parametrize("script, device", [("bigram", "CUDA"), ("bigram", "MPS"), ("gpt2", "CUDA")])
def test_out_of_memory_suggests_a_smaller_batch(script, device, tmp_path, text_file, capsys, monkeypatch):
    out_of_memory_in_the_loss(monkeypatch, device)
    code, out, err = run_in_process(script, tiny_args(script, tmp_path, text_file), capsys, monkeypatch)
    assert code == 2
    last = err.splitlines()[-1]  # after the progress bar's lines
    more = " with more --grad_accum_steps (the same global batch)" if script == "gpt2" else ""  # gpt2 has them
    assert last == f"error: {device} ran out of memory with --batch_size=4; try a smaller --batch_size{more}"
    assert err.count("error:") == 1 and "Traceback" not in out + err


def test_another_runtime_error_is_a_bug_and_keeps_its_traceback(tmp_path, text_file, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("shapes cannot be multiplied")
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_in_process("bigram", tiny_args("bigram", tmp_path, text_file), capsys, monkeypatch)


# --- any block_size the scripts accept ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_block_size_1_trains_and_samples_past_its_one_position(script, tmp_path, text_file, capsys, monkeypatch):
    argv = tiny_args(script, tmp_path, text_file, "--block_size=1", "--max_new_tokens=30")
    code, out, err = run_in_process(script, argv, capsys, monkeypatch)
    assert code == 0, err
    sample = out.split("loss curves in", 1)[1].split("\n", 1)[1]  # the text printed after the run
    assert len(sample.rstrip("\n")) >= 30
    code, out, err = run_in_process(script, [*argv, "--sample"], capsys, monkeypatch)
    assert code == 0, err
    assert len(out.split("\n", 1)[1].rstrip("\n")) >= 30  # after `using device: cpu`
