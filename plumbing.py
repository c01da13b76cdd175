"""What the three lessons share and the video does not teach, written once: the command line and its checks, the
input text, files and checkpoints, a run's bookkeeping, sampling, plots, the entry point; called as plumbing.X."""

import ast
import contextlib
import errno
import hashlib
import io
import math
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class Script:
    """What the plumbing needs to know of the lesson script it serves."""
    name: str  # "v2": the file is v2.py, and its checkpoints say so
    path: str  # the script's file: --help prints its docstring and the comments of its hyperparameters
    hyperparameters: dict  # every setting's default
    model_keys: tuple = ()  # the settings a saved model's shape is built from


class UserError(Exception):
    """A mistake the user can fix: printed as one line, without a traceback."""


# ---- the command line ----
@dataclass(frozen=True)
class Range:
    """The valid values of a number setting: the text --help and the error lines show, and the check itself."""
    text: str  # [a, b] includes its ends, (a, b) excludes them
    check: object  # (value, cfg) -> bool; a float setting is never nan or inf
    names: tuple = ()  # the other settings the range depends on, shown in its error line


AT_LEAST_0 = Range("[0, inf)", lambda value, cfg: 0 <= value < math.inf)
AT_LEAST_1 = Range("[1, inf)", lambda value, cfg: 1 <= value < math.inf)
POSITIVE = Range("(0, inf)", lambda value, cfg: 0 < value < math.inf)
BELOW_1 = Range("[0, 1)", lambda value, cfg: 0 <= value < 1)
VALID = {  # a Range, or a tuple of the choices; a script skips the names it lacks; paths: check_output_path
    "batch_size": AT_LEAST_1, "block_size": AT_LEAST_1, "max_iters": AT_LEAST_1, "eval_interval": AT_LEAST_1,
    "learning_rate": POSITIVE, "n_embd": AT_LEAST_1, "n_layer": AT_LEAST_1, "dropout": BELOW_1,
    "n_head": Range("[1, inf) and n_embd % n_head == 0", lambda value, cfg: 1 <= value and cfg["n_embd"] % value == 0,
                    ("n_embd",)),
    "min_lr": Range("[0, learning_rate]", lambda value, cfg: 0 <= value <= cfg["learning_rate"], ("learning_rate",)),
    "warmup_iters": AT_LEAST_0, "weight_decay": AT_LEAST_0, "beta1": BELOW_1, "beta2": BELOW_1, "grad_clip": AT_LEAST_0,
    "grad_accum_steps": AT_LEAST_1, "time_budget": AT_LEAST_0, "dtype": ("auto", "bfloat16", "float16", "float32"),
    "eval_train_windows": AT_LEAST_1, "max_val_windows": AT_LEAST_1, "eval_batch_size": AT_LEAST_1,
    "max_new_tokens": AT_LEAST_0, "temperature": AT_LEAST_0, "top_k": AT_LEAST_0, "device": ("cuda", "mps", "cpu", ""),
    "seed": Range("[-2**63, 2**63 - 1]", lambda value, cfg: -2**63 <= value <= 2**63 - 1), "log_interval": AT_LEAST_1,
}
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def describe_valid(rule):
    """A VALID entry as --help and the error lines write it."""
    return rule.text if isinstance(rule, Range) else ", ".join(choice or '""' for choice in rule)


def settings(script, argv):
    """(cfg, overrides, checkpoint): the defaults, then the command line's values; with --sample or --resume, the
    saved model's settings and its checkpoint (see saved_settings). check_config checks the result."""
    overrides = parse_command_line(argv, script)
    cfg = {**script.hyperparameters, **overrides}
    if cfg["sample"] and cfg["resume"]:  # settings that mean nothing together
        raise UserError("--sample and --resume do not go together: --sample generates from the saved model, "
                        "--resume trains it further; run one, then the other")
    if cfg["sample"] and "time_budget" in overrides:
        raise UserError("--time_budget plans a training run and --sample does not train; leave --time_budget out")
    if (cfg["sample"] or cfg["resume"]) and overrides.get("init_from"):
        raise UserError("--init_from starts a new run from a saved model, so it cannot go with --resume or --sample; "
                        "a finetuning run resumes and samples with its own --out_dir")
    if not (cfg["sample"] or cfg["resume"]):
        return cfg, overrides, None
    checkpoint = load_checkpoint(script, cfg["out_dir"], cfg)
    return saved_settings(script, cfg, overrides, checkpoint), overrides, checkpoint


def parse_command_line(argv, script):
    """['--name=value', '--flag', ...] -> {name: value}, each of its default's type; --help or -h lists them."""
    if "--help" in argv or "-h" in argv:
        print_help(script)
        sys.exit(0)
    valid = ", ".join(f"--{name}" for name in script.hyperparameters)
    overrides = {}
    for arg in argv:
        name, has_value, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or name not in script.hyperparameters:
            raise UserError(f"unknown option {arg!r}; valid options (as --name=value, or --help): {valid}")
        kind = type(script.hyperparameters[name])
        try:
            value = BOOLEANS.get(text.lower() if has_value else "true") if kind is bool else kind(text)
        except ValueError:
            value = None
        if value is None or not has_value and kind is not bool:
            raise UserError(f"--{name} needs a value of type {kind.__name__}, got {text!r}; valid options: {valid}")
        overrides[name] = value
    return overrides


def print_help(script):
    """The docstring, then each line of the script's `# hyperparameters` block: default, comment, valid values."""
    with open(script.path, encoding="utf-8") as f:
        source = f.read()
    block = source.split("\n# hyperparameters\n", 1)[1].split("\n# every name above", 1)[0]
    print(f"usage: python {script.name}.py [--name=value ...]\n\n{ast.get_docstring(ast.parse(source))}\n\n"
          "hyperparameters:")
    for line in block.splitlines():
        name, is_setting, rest = line.partition(" = ")
        if not is_setting:
            print(f"{line.removeprefix('# ')}:")
        elif name in script.hyperparameters:  # (a tuple or a list is no setting the command line can change)
            value, _, comment = rest.partition("  # ")  # the default as the file writes it: 1e-3, "out/v2", ""
            value = value.strip('"') if isinstance(script.hyperparameters[name], str) and value != '""' else value
            valid = f"; valid: {describe_valid(VALID[name])}" if name in VALID else ""
            print(f"  --{name}={value}".ljust(28) + f" {comment}{valid}")


def check_config(cfg):
    """Refuse, before any work and creating nothing, what cannot work: VALID, the paths to write, a missing device."""
    for name, rule in ((name, rule) for name, rule in VALID.items() if name in cfg):
        if not isinstance(rule, Range) and cfg[name] not in rule:
            raise UserError(f"--{name} must be one of {describe_valid(rule)}, got {cfg[name]!r}")
        if isinstance(rule, Range) and not rule.check(cfg[name], cfg):
            named = ", ".join(f"{other}={cfg[other]}" for other in rule.names)
            raise UserError(f"--{name}={cfg[name]} is out of range: {name} must be in {rule.text}"
                            + (f" ({named})" if named else ""))
    if cfg.get("attention_png") and not cfg["sample"]:
        raise UserError("--attention_png draws the attention of a saved model: add --sample (and a --prompt)")
    if cfg.get("attention_png"):  # drawn after the sample: matplotlib must import before any work
        try:
            import_pyplot()
        except UserError as error:
            raise UserError(f"--attention_png needs matplotlib: {error}") from None
    if not cfg["sample"]:
        check_output_path(cfg["out_dir"], "out_dir", folder=True)
        for path in (os.path.join(cfg["out_dir"], name) for name in ("ckpt.pt", "losses.csv", "loss.png")):
            if os.path.isdir(path):
                raise UserError(f"{path} is a folder; move it out of the way, or choose another --out_dir")
    for option in ("attention_png", "sample_file"):
        if cfg.get(option):
            check_output_path(cfg[option], option)
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if cfg["device"] and not available[cfg["device"]]:
        raise UserError(f"--device={cfg['device']} was asked for but this machine has no {cfg['device']}; "
                        "use --device=cpu or leave --device out to pick the best one available")


def check_output_path(path, option, folder=False):
    """--option=path can be written: a file path does not end in a separator or name a folder, a folder path does
    not name a file, and the nearest existing folder above it is a folder this user can write in."""
    if not folder and (path.endswith(("/", os.sep)) or os.path.isdir(path)):
        raise UserError(f"cannot write {path}: it names a folder, not a file; choose another --{option}, "
                        "a file name")
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--{option}={path} is a file, not a folder; choose another --{option}")
    above = os.path.abspath(path if folder else os.path.dirname(path) or ".")
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)  # the folders below it are made when the run writes
    if not os.path.isdir(above):
        raise UserError(f"cannot write {path}: {above} is a file, not a folder (a part of the path is a file); "
                        f"choose another --{option}")
    if not os.access(above, os.W_OK):
        raise UserError(f"cannot write in {above}: permission denied; choose a folder you can write to (--{option})")


# ---- the device ----
def sampling_device(device):
    """Where torch.multinomial draws the next token: on the CPU for MPS, whose multinomial has had bugs that give
    a token of probability 0, e.g. one top_k has excluded (PyTorch issues 192577, 136623), or crash (178579)."""
    return torch.device("cpu") if torch.device(device).type == "mps" else torch.device(device)


def out_of_memory(error):
    """'CUDA', 'MPS' or 'the CPU' when the error is that device running out of memory, else None. MPS and the CPU's
    allocator raise a RuntimeError ("can't allocate memory" on Linux and macOS, "not enough memory" on Windows)."""
    cpu = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "CUDA"
    if isinstance(error, RuntimeError) and "MPS backend out of memory" in str(error):
        return "MPS"
    if isinstance(error, MemoryError) or isinstance(error, RuntimeError) and any(text in str(error) for text in cpu):
        return "the CPU"
    return None


def check_memory(cfg, dev, build_model):
    """Refuse, before any work, a model that cannot fit the device: its weights (and, to train, their gradients
    and AdamW's two moments), float32. Counted on the meta device, which holds shapes and no numbers."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(cfg, 256).parameters())  # 256: more than a text's characters
    need, kind, have = 4 * n_params * (1 if cfg["sample"] else 4), torch.device(dev).type, None
    if kind == "cuda":
        have = torch.cuda.get_device_properties(dev).total_memory
    elif kind == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        have = torch.mps.recommended_max_memory()
    elif kind == "cpu" and hasattr(os, "sysconf"):  # the machine's physical memory (POSIX; Windows has no sysconf)
        with contextlib.suppress(ValueError, OSError):
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if have and need > have:  # where torch or the system does not say, nothing is checked
        raise UserError(f"a model of {n_params / 1e6:,.0f}M parameters needs about {need / 2**30:,.0f} GiB to "
                        f"{'sample' if cfg['sample'] else 'train'}, and {dev} has {have / 2**30:,.0f} GiB; "
                        "choose a smaller model (--n_embd, --n_layer)")


# ---- files ----
WRITE_PROBLEMS = {  # by errno name, so that a code this platform lacks is simply never matched
    "ENOSPC": "no space left on the disk; free some space and run again",
    "EDQUOT": "the disk quota is used up; free some space and run again",
    "EACCES": "permission denied; choose a folder you can write to",
    "EPERM": "permission denied; choose a folder you can write to",
    "EROFS": "the file system is read-only; choose a folder you can write to",
    "ENOTDIR": "a part of the path is a file, not a folder; choose another path",
    "EISDIR": "a folder is in the way; choose another path", "ENOENT": "its folder does not exist; choose another path",
    "EEXIST": "a file is in the way; choose another path",
}
REPLACE_WAITS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.25)  # seconds between tries to replace a file that is held open


class FileHeld(UserError):
    """path cannot be replaced: on Windows, a file another program has open (PermissionError, winerror 32 or 5)."""


def write_problem(path, error):
    """One line for a failed write: what happened to which path, and what to do."""
    problem = WRITE_PROBLEMS.get(errno.errorcode.get(error.errno, ""), error.strerror or str(error))
    return f"cannot write {path}: {problem}"


def write_file(path, chunks):
    """Write chunks of bytes to path atomically (a temp file, flushed, renamed over path): a kill leaves the previous
    file whole, a failed write no temp file and a UserError; a file held open is tried for a second, then FileHeld."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        for wait in (*REPLACE_WAITS, None):
            try:
                os.replace(tmp, path)
                break
            except PermissionError:
                if wait is None:
                    raise FileHeld(f"cannot replace {path}: another program, e.g. a spreadsheet or an image "
                                   "viewer, has it open") from None
                time.sleep(wait)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, OSError):
            raise UserError(write_problem(path, error)) from None
        raise


def make_folder(path, option):
    """Create the folder given by --option (and its parents), and check that files can be written in it."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(write_problem(path, error) + f" (--{option})") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"cannot write in {path}: permission denied; choose a folder you can write to (--{option})")


# ---- the input text ----
DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DATA_SIZE = 1115394  # bytes of tiny Shakespeare
DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def read_text(path):
    """The whole input file as one string (lessons 1 and 2 hold the text in memory)."""
    path = check_input_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise UserError(f"input file {path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                        "convert it to UTF-8 first") from None


def download_tiny_shakespeare(path):
    """Fetch tiny Shakespeare to path, check its size and hash, and write it atomically."""
    print(f"{path} not found: downloading tiny Shakespeare")
    try:
        with urllib.request.urlopen(DATA_URL, timeout=30) as response:
            content = response.read()
    except OSError as error:
        raise UserError(f"{path} is missing and the download failed ({error}); place any UTF-8 text file "
                        f"at {path} or pass --input_file=PATH") from None
    if len(content) != DATA_SIZE or hashlib.sha256(content).hexdigest() != DATA_SHA256:
        raise UserError(f"the downloaded file is not tiny Shakespeare; place any UTF-8 text file at {path} "
                        "or pass --input_file=PATH")
    write_file(path, [content])


def check_input_file(path):
    """The path of the text to read, a readable file (tiny Shakespeare is downloaded for a missing input.txt). The
    default input.txt is the one beside the scripts (and this file), from any working folder."""
    beside = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(beside, path) if path == "input.txt" and beside != os.getcwd() else path
    folder = os.path.dirname(path) or "."
    if not os.path.exists(path) and not os.path.isdir(folder):
        raise UserError(f"input file {path} does not exist: {folder} is not a folder; "
                        "pass --input_file=PATH to a UTF-8 text file")
    if not os.path.exists(path) and os.path.basename(path) == "input.txt":
        download_tiny_shakespeare(path)
    if not os.path.exists(path):
        raise UserError(f"input file {path} does not exist; pass --input_file=PATH to a UTF-8 text file")
    if os.path.isdir(path):
        raise UserError(f"input file {path} is a directory; pass --input_file=PATH to a UTF-8 text file")
    if not os.path.isfile(path):
        raise UserError(f"input file {path} is not a regular file (a device or a pipe); "
                        "pass --input_file=PATH to a UTF-8 text file")
    if not os.access(path, os.R_OK):
        raise UserError(f"input file {path} cannot be read (permission denied); check its permissions")
    return path


def check_text(path, n_chars, n_distinct, block_size):
    """A text must be long enough for one window in its val split, and have two distinct characters."""
    if n_chars == 0:
        raise UserError(f"input file {path} is empty; pass --input_file=PATH to a text with some content")
    if n_distinct < 2:
        raise UserError(f"input file {path} uses a single distinct character; there is nothing to learn")
    n_val = n_chars - int(0.9 * n_chars)
    if n_val < block_size + 1:
        raise UserError(f"the val split of {path} (last 10%, {n_val} characters) is shorter than block_size + 1 "
                        f"= {block_size + 1}; use a longer text or a smaller --block_size")


# ---- checkpoints ----
SAMPLE_KEYS = {"config": dict, "chars": str, "model": dict}  # what a checkpoint needs to be sampled
RESUME_KEYS = {"optimizer": dict, "step": int, "best_val_loss": float}  # and to be resumed
FIXES = {  # for a saved model whose shape differs from the command line's, by what the user asked for
    "sample": "leave --{name} out to sample the saved model (its shape is read from the checkpoint)",
    "resume": "leave --{name} out to resume the saved model; a model of another shape is a new run, with another "
              "--out_dir",
    "init_from": "leave --{name} out: a finetuned model has the shape of the model it starts from",
}


def command(script, cfg, *options):
    """The command that runs the script with options in this run's folders (--out_dir and --input_file, where they
    are not the defaults), quoted to paste into a shell; under torchrun, a torchrun command with as many processes."""
    options += tuple(f"--{name}={cfg[name]}" for name in ("out_dir", "input_file")
                     if name in cfg and cfg[name] != script.hyperparameters[name])
    typed = sys.argv[0] if os.path.basename(sys.argv[0]) == f"{script.name}.py" else f"{script.name}.py"
    launcher = ["python"]
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        processes = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
        launcher = ["torchrun", "--standalone", f"--nproc_per_node={processes}"]
    words = [*launcher, typed, *options]
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)  # cmd and PowerShell; sh


def load_checkpoint(script, folder, cfg=None, option="out_dir"):
    """The checkpoint in folder (--option), loaded weights_only: tensors and plain types, never code; or one line."""
    path = os.path.join(folder, "ckpt.pt")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--{option}={folder} is a file, not a folder; pass the folder of a training run")
    if not os.path.exists(path):
        hint = command(script, {**(cfg or {}), "out_dir": folder} if option == "out_dir" else {"out_dir": folder})
        raise UserError(f"no saved model at {path}" + (f" (--{option})" if option != "out_dir" else "")
                        + f"; train one first with: {hint}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "Unsupported class" in str(error):  # refused by weights_only
            raise UserError(f"{path} was refused: loading it would run code (it is not a plain checkpoint); "
                            "only load checkpoints written by this script") from None
        raise UserError(f"{path} is not a readable checkpoint (not a file torch.save wrote); "
                        "delete it and train again") from None
    except Exception as error:
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: {type(error).__name__}); "
                        "delete it and train again") from None
    info = checkpoint if isinstance(checkpoint, dict) else {}  # another script's: an error naming it
    found, what, sample_with = info.get("script"), info.get("what"), info.get("sample_with")
    if found != script.name and isinstance(what, str) and isinstance(sample_with, str):  # it says what it is
        raise UserError(f"{path} is {what}, not a checkpoint of {script.name}.py; sample it with: {sample_with}")
    if found != script.name:
        raise UserError(f"{path} is not a checkpoint of {script.name}.py" + (f" (it is from {found}.py)" if found
                        else "") + f"; use that script, or train {script.name}.py with its own --out_dir")
    check_keys(checkpoint, path, SAMPLE_KEYS, "delete it and train again")
    missing = [name for name in script.model_keys if not isinstance(checkpoint["config"].get(name), int)]
    if missing:
        raise UserError(f"{path} is damaged: its config has no {missing[0]}; delete it and train again")
    return checkpoint


def check_keys(checkpoint, path, keys, fix):
    """Each key of keys is in the checkpoint with its type (an int is not a bool; a float may be an int)."""
    for key, kind in keys.items():
        value = checkpoint.get(key)
        if not isinstance(value, (int, float) if kind is float else kind) or isinstance(value, bool):
            found = "missing" if key not in checkpoint else f"a {type(value).__name__}, not a {kind.__name__}"
            raise UserError(f"{path} is damaged: its {key!r} is {found}; {fix}")


def saved_settings(script, cfg, overrides, checkpoint):
    """The settings of --sample and --resume: the saved model's shape (model_keys; another on the command line is an
    error); --resume also takes the saved run's other settings, then the command line's."""
    saved = checkpoint["config"]
    mode = "sample" if cfg["sample"] else "resume"
    model_settings = saved_model_settings(script, overrides, saved, cfg["out_dir"], mode)
    if cfg["sample"]:
        return {**cfg, **model_settings}
    check_keys(checkpoint, os.path.join(cfg["out_dir"], "ckpt.pt"), RESUME_KEYS,
               "it can be sampled (--sample) but not resumed; start a new run with another --out_dir")
    cfg = {**script.hyperparameters, **saved, **overrides}
    if cfg["max_iters"] < checkpoint["step"]:
        raise UserError(f"--max_iters={cfg['max_iters']} is before the saved step {checkpoint['step']}; "
                        "resume with a larger --max_iters")
    return cfg


def saved_model_settings(script, overrides, saved, folder, mode):
    """The saved model's shape (model_keys); another value given is an error with the fix for the mode (FIXES)."""
    for name in script.model_keys:
        if name in overrides and overrides[name] != saved[name]:
            raise UserError(f"--{name}={overrides[name]} does not match the saved model ({name}={saved[name]} "
                            f"in {folder}); " + FIXES[mode].format(name=name))
    return {name: saved[name] for name in script.model_keys}


def load_weights(script, model, checkpoint, path):
    """The checkpoint's weights into the model; a checkpoint whose tensors do not fit it is a clear error."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as error:
        lines = str(error).strip().splitlines()  # "Error(s) in loading state_dict ...:", then what does not fit
        problem = (lines[1] if len(lines) > 1 else lines[0]).strip().rstrip(":.")
        problem = problem if len(problem) <= 100 else problem[:100] + "..."
        raise UserError(f"{path} does not fit {script.name}.py's model ({problem}); it was saved by another "
                        "version of the script: train again, or use another --out_dir") from None


# ---- sampling ----
def prompt_text(prompt, chars):  # chars: the vocabulary in token order, a string or stoi
    """--prompt as typed -> the text to continue: \\n is a newline and \\\\ a backslash, in every shell. An empty prompt
    starts from a newline (or the vocabulary's first character, token 0, in a text without one), as the video does."""
    text = "\\".join(part.replace("\\n", "\n") for part in prompt.split("\\\\"))
    return text or ("\n" if "\n" in chars else next(iter(chars)))


def show_sample(text, cfg):
    """Print the sample; with --sample_file, first write it there too, as UTF-8 (the console may not show it all)."""
    if cfg["sample_file"]:
        make_folder(os.path.dirname(cfg["sample_file"]) or ".", "sample_file")
        write_file(cfg["sample_file"], [text.encode("utf-8")])
    print(text)


# ---- the training run: its bookkeeping, so that the loop shows the lesson ----
LOG_HEADER = "step,train_loss,val_loss,elapsed_s,lr"


class Run:
    """A training run's bookkeeping: the best model and resuming (best), the loss log (log), the time spent (start,
    eval_seconds) and the progress bar (bar, postfix); as a context, Ctrl-C and out of memory in one line.
    extra_state: {name: object with state_dict() and load_state_dict()}, saved with the model."""

    def __init__(self, script, cfg, model, optimizer, chars, checkpoint=None, master=True, extra_state=None):
        self.script, self.cfg, self.model, self.master = script, cfg, model, master
        make_folder(cfg["out_dir"], "out_dir")  # only now: a run refused before this point leaves nothing behind
        elsewhere = os.getcwd() != os.path.dirname(os.path.abspath(script.path))  # not the scripts' folder
        if master and elsewhere and not os.path.isabs(cfg["out_dir"]):
            print(f"writing in {os.path.abspath(cfg['out_dir'])} (--out_dir is relative to the folder you run in)")
        self.batch_generator = torch.Generator().manual_seed(cfg["seed"])  # its own, so that resuming restores it
        self.best = BestModel(script, cfg, model, optimizer, "".join(chars), self.batch_generator, extra_state or {})
        self.log = LossLog(os.path.join(cfg["out_dir"], "losses.csv"))
        self.start_step = self.step = 0 if checkpoint is None else self.best.restore(checkpoint)
        if checkpoint is not None:
            self.log.read(self.start_step)  # the run evaluates the saved step again
            if master:
                print(f"resuming from step {self.start_step} (val loss {self.best.val_loss:.4f})")
        self.start = self.last = time.time()  # last: the end of the last training step or evaluation
        self.eval_seconds = self.last_eval_seconds = 0.0  # evaluating: from the end of a step to an evaluation's end
        self.postfix = {}  # what the bar shows after the loss; scripts may add to it
        self.bar = tqdm(total=cfg["max_iters"], initial=self.start_step, dynamic_ncols=True, mininterval=0.5,
                        disable=not master)

    def evaluated(self, step, losses, lr=None):
        """After an evaluation: print and log the losses, and save the model when it is the best so far."""
        self.step, self.last_eval_seconds = step, time.time() - self.last
        self.eval_seconds += self.last_eval_seconds
        tqdm.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        self.log.add(step, losses, time.time() - self.start, self.cfg["learning_rate"] if lr is None else lr)
        if not math.isfinite(losses["val"]):
            raise UserError(f"the val loss became {losses['val']} at step {step}; the best model so far is kept in "
                            f"{self.best.path}; try a smaller --learning_rate")
        self.best.save_if_best(step, losses["val"])
        self.last = time.time()

    def stepped(self, step, loss, **fields):
        """After a training step: the progress bar; every log_interval steps the loss (and fields) on it, and a loss
        that is not a number stops the run."""
        self.bar.update(1)
        self.step, self.last = step + 1, time.time()
        if step % self.cfg["log_interval"]:
            return
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise UserError(f"the training loss became {loss_value} at step {step}; the best model so far is kept "
                            f"in {self.best.path}; try a smaller --learning_rate")
        self.postfix["loss"] = f"{loss_value:.4f}"
        self.postfix.update({name: f"{float(value):.3g}" for name, value in fields.items()})
        self.bar.set_postfix(self.postfix, refresh=False)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.bar.close()  # before any message, so that the message gets a line of its own
        if kind is KeyboardInterrupt:
            if self.master and self.best.saved:
                print(f"\ninterrupted at step {self.step}; the best model so far is in {self.best.path}; "
                      f"continue with: {command(self.script, self.cfg, '--resume')}", file=sys.stderr)
            elif self.master:  # the first evaluation had not saved a model yet: there is nothing to resume
                print(f"\ninterrupted at step {self.step}, before this run saved a model; nothing to resume: run the "
                      "same command again", file=sys.stderr)
            sys.exit(130)
        if out_of_memory(error) in ("CUDA", "MPS"):
            more = " with more --grad_accum_steps (the same global batch)" if "grad_accum_steps" in self.cfg else ""
            raise UserError(f"{out_of_memory(error)} ran out of memory with --batch_size={self.cfg['batch_size']}; "
                            f"try a smaller --batch_size{more}") from None

    def finished(self):
        """After the last step: how long training took, and the plot of the loss log."""
        if not self.master:
            return
        print(f"training took {time.time() - self.start:.1f} s ({self.eval_seconds:.1f} s of it "
              f"evaluating); best val loss {self.best.val_loss:.4f}, saved in {self.best.path}")
        try:
            plot_losses(self.log.rows, self.log.path, f"{self.script.name}.py on {self.cfg['input_file']}")
        except FileHeld as error:
            print(f"warning: {error}; it keeps its last picture, and {self.log.path} has every loss", file=sys.stderr)


class BestModel:
    """ckpt.pt: the model, optimizer, random state and extra_state, saved at each best val loss; restored to resume."""

    def __init__(self, script, cfg, model, optimizer, chars, batch_generator, extra_state):
        self.script, self.cfg, self.model, self.optimizer, self.chars = script, cfg, model, optimizer, chars
        self.batch_generator, self.extra_state = batch_generator, extra_state
        self.path = os.path.join(cfg["out_dir"], "ckpt.pt")
        self.val_loss, self.saved = float("inf"), False  # saved: ckpt.pt holds this run, so --resume can continue it

    def restore(self, checkpoint):
        """Continue from the checkpoint: its weights, optimizer, extra state and random state; returns its step."""
        if checkpoint["chars"] != self.chars:
            raise UserError(f"{self.path} was trained on a text with another vocabulary; resume with the same "
                            "--input_file, or start a new run with another --out_dir")
        load_weights(self.script, self.model, checkpoint, self.path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for name, obj in self.extra_state.items():
            if checkpoint.get(name):  # an empty state (saved while it was switched off) has nothing to restore
                obj.load_state_dict(checkpoint[name])
        if "rng_torch" in checkpoint:  # without it (a checkpoint written elsewhere) the batches are drawn afresh
            torch.set_rng_state(checkpoint["rng_torch"])
            self.batch_generator.set_state(checkpoint["rng_batches"])
        self.val_loss, self.saved = checkpoint["best_val_loss"], True
        return checkpoint["step"]

    def save_if_best(self, step, val_loss):
        if val_loss >= self.val_loss:
            return
        self.val_loss = val_loss
        buffer = io.BytesIO()  # torch.save into memory, then write_file: never half a checkpoint on disk
        torch.save({
            "script": self.script.name, "config": self.cfg, "chars": self.chars, "step": step,
            "best_val_loss": val_loss, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "rng_torch": torch.get_rng_state(), "rng_batches": self.batch_generator.get_state(),
            **{name: obj.state_dict() for name, obj in self.extra_state.items()},
        }, buffer)
        try:
            write_file(self.path, [buffer.getvalue()])
            self.saved = True
        except FileHeld as error:  # the file held is the previous best model: it can be resumed
            raise UserError(f"{error}; the best model so far is still in it: close that program, then continue "
                            f"with: {command(self.script, self.cfg, '--resume')}") from None


class LossLog:
    """losses.csv: a row per evaluation, all written again at each (held open by another program: one warning)."""

    def __init__(self, path):
        self.path, self.rows, self.warned, self.offset = path, [], False, 0.0  # offset: the saved run's seconds

    def read(self, before_step):
        """Resuming: the rows before before_step; rows that are not five numbers are dropped, with one warning line."""
        if not os.path.exists(self.path):  # (a folder in its place was refused by check_config)
            return
        with open(self.path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        dropped = 0
        for line in lines[1:] if lines and lines[0] == LOG_HEADER else lines:
            fields = line.split(",")
            try:
                step, _ = int(fields[0]), [float(x) for x in fields[1:]]
                ok = len(fields) == 5
            except ValueError:
                ok = False
            dropped += not ok
            if ok and step < before_step:
                self.rows.append(line)
            if ok and step <= before_step:  # the resumed run's time goes on from the saved step's
                self.offset = max(self.offset, float(fields[3]))
        if dropped or lines[:1] != [LOG_HEADER]:
            print(f"warning: {self.path} is damaged: {dropped} unreadable row(s) dropped, {len(self.rows)} kept; "
                  "training goes on and rewrites it at the next evaluation", file=sys.stderr)

    def add(self, step, losses, elapsed, lr):
        self.rows.append(f"{step},{losses['train']:.4f},{losses['val']:.4f},{self.offset + elapsed:.1f},{lr:.3g}")
        try:
            write_file(self.path, ["\n".join([LOG_HEADER, *self.rows, ""]).encode()])
        except FileHeld as error:
            if not self.warned:
                self.warned = True
                tqdm.write(f"warning: {error}; training goes on, and the next evaluation writes the whole log again",
                           file=sys.stderr)


# ---- plots ----
def import_pyplot():
    """matplotlib's pyplot, drawing into files; UserError says how to install it, or why it does not import."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and error.name == "matplotlib":
            raise UserError("matplotlib is not installed; pip install matplotlib") from None
        why = error if isinstance(error, ModuleNotFoundError) else f"{type(error).__name__}: {error}"
        raise UserError(f"matplotlib is installed but does not import ({why}); "
                        "pip install --upgrade matplotlib") from None
    return plt


def save_figure(fig, path):
    """Draw the figure into memory, then write it atomically as a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    import_pyplot().close(fig)
    write_file(path, [buffer.getvalue()])


def plot_losses(rows, csv_path, title):
    """Train and val loss against step, as loss.png beside the loss log (without matplotlib, say how to get it)."""
    try:
        plt = import_pyplot()
    except UserError as error:
        print(f"loss log in {csv_path}; no plot of it: {error}")
        return
    if not rows:
        return
    steps, train_losses, val_losses = zip(*[(int(s), float(t), float(v)) for s, t, v, *_ in
                                            (row.split(",") for row in rows)], strict=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, train_losses, marker=".", label="train loss")
    ax.plot(steps, val_losses, marker=".", label="val loss")
    ax.set(xlabel="step", ylabel="loss (nats per character)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = os.path.join(os.path.dirname(csv_path), "loss.png")
    save_figure(fig, png_path)
    print(f"loss curves in {png_path}")


def draw_attention(script, attention_weights, model, cfg, chars, dev):
    """--attention_png: a heatmap per layer and head of attention_weights(model, prompt (1, T)) (n_layer, nh, T, T).
    Row t is what position t takes from each position up to t: it sums to 1; the masked future is left empty."""
    start = time.time()
    ids = [chars.index(c) for c in prompt_text(cfg["prompt"], chars)]  # every character is known: the sample used it
    if len(ids) > cfg["block_size"]:
        print(f"the prompt is longer than block_size ({len(ids)} > {cfg['block_size']} characters): "
              f"the picture shows its last {cfg['block_size']}")
        ids = ids[-cfg["block_size"]:]
    weights = attention_weights(model, torch.tensor([ids], device=dev)).float().cpu()  # (n_layer, nh, T, T)
    n_layer, n_head, T, _ = weights.shape
    weights = weights.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("nan"))  # empty, not 0
    labels = [{"\n": "⏎", " ": "␣"}.get(chars[i], chars[i]) for i in ids]
    plt = import_pyplot()
    side = max(2.0, 0.12 * T + 0.8)  # inches per heatmap: room for one readable character per row and column
    width, height = n_head * side, n_layer * side + 0.6
    fig, axes = plt.subplots(n_layer, n_head, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.1 / width, bottom=0.7 / height, top=1 - 0.8 / height,
                        wspace=0.2, hspace=0.3)  # fixed margins in inches: a layout engine doubles the drawing time
    for layer, row in enumerate(axes):
        for head, ax in enumerate(row):
            ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(range(T), labels, fontsize=6)
            ax.set_yticks(range(T), labels, fontsize=6)
            ax.tick_params(length=0)
    for ax in axes[-1]:
        ax.set_xlabel("key: the position attended to", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("query: the position attending", fontsize=8)
    fig.suptitle(f"{script.name}.py attention weights on {''.join(chars[i] for i in ids)!r}: row t = what position "
                 "t takes from each position up to t", fontsize=10, y=1 - 0.2 / height)
    make_folder(os.path.dirname(cfg["attention_png"]) or ".", "attention_png")
    save_figure(fig, cfg["attention_png"])
    print(f"attention weights of {T} characters ({n_layer} layers x {n_head} heads) in {cfg['attention_png']} "
          f"({time.time() - start:.1f} s)")


# ---- the entry point ----
def run(main):
    """main(sys.argv[1:]): a user's mistake or no memory is one `error:` line, exit code 2; Ctrl-C one line, 130."""
    for stream in (sys.stdout, sys.stderr):  # a character the console cannot encode prints as ?, never a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        main(sys.argv[1:])
    except UserError as error:
        say_error(error)
        sys.exit(2)
    except (RuntimeError, MemoryError) as error:  # out of memory making the model, the optimizer or a batch
        if not out_of_memory(error):
            raise
        say_error(f"{out_of_memory(error)} ran out of memory; try a smaller --batch_size, or a smaller model")
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C before training or after it (during training, Run says how to resume)
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


def say_error(error):
    """`error: ...` on stderr; under torchrun, once for all the processes that stop on the same error."""
    key = hashlib.sha256(f"{os.environ.get('TORCHELASTIC_RUN_ID')} {error}".encode()).hexdigest()[:20]
    with contextlib.suppress(FileExistsError):  # under torchrun, the first process to make the error's mark says it
        if "TORCHELASTIC_RUN_ID" in os.environ:
            os.close(os.open(os.path.join(tempfile.gettempdir(), f"error-{key}"), os.O_CREAT | os.O_EXCL))
        print(f"error: {error}", file=sys.stderr)
