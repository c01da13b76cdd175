"""Lesson 2: a transformer that reads the context (the video's final model, at its small size).

Adds to bigram.py: position embeddings, masked self-attention in several heads, a feed-forward layer,
residual connections and LayerNorm, stacked n_layer times.
Run:    python v2.py                              (train; the best model is kept in out/v2/)
        python v2.py --sample --prompt="ROMEO:"   (generate from the saved model)    python v2.py --help
Result: val loss 4.40 -> 1.8094 in 5000 steps, 92 s on 2 CPU cores, 2.1x faster than the video's code (2026-11-26).
"""

import os

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

import plumbing  # not in the video: the command line, checks, files, saving and resuming, plots (plumbing.py)

# hyperparameters
batch_size = 16  # sequences per forward pass during training (B)
block_size = 32  # max context length in characters (T)
max_iters = 5000  # training steps (optimizer updates)
eval_interval = 500  # steps between evaluations of the train and val loss
learning_rate = 1e-3  # AdamW step size
n_embd = 64  # width of the token representation (C)
n_head = 4  # attention heads per layer (nh); head_size = n_embd // n_head
n_layer = 4  # transformer blocks
dropout = 0.0  # probability of zeroing an activation during training
# evaluation
eval_train_windows = 1000  # train windows scored at each evaluation (val scores its whole split)
eval_batch_size = 100  # windows per forward pass during evaluation
# sampling
prompt = ""  # text the sample continues (empty: start from a newline); \n in it is a newline, \\ a backslash
max_new_tokens = 500  # characters to generate
temperature = 1.0  # sampling temperature: <1 sharper, >1 flatter, 0 always the likeliest character
top_k = 0  # sample only among the k likeliest characters (0: all of them)
sample_file = ""  # also write the sample, as UTF-8, into this file (empty: print it only)
attention_png = ""  # with --sample: also draw the prompt's attention weights, each layer and head, into this PNG
# what to run, on what, and where
sample = False  # --sample: generate from the saved model instead of training
resume = False  # --resume: continue training from the checkpoint in out_dir
input_file = "input.txt"  # training text (any UTF-8 file); tiny Shakespeare is downloaded if missing
out_dir = "out/v2"  # where the best model and the loss log are written
device = ""  # cuda, mps or cpu; empty picks cuda, then mps, then cpu
seed = 1337  # random seed for the weights, the batches and sampling
log_interval = 10  # steps between updates of the loss on the progress bar
# every name above is a hyperparameter: `python v2.py --name=value` overrides it, --help lists them
HYPERPARAMETERS = {k: v for k, v in globals().items() if type(v) in (bool, int, float, str) and not k.startswith("_")}
# what plumbing.py needs to know of this script; model_keys: the settings a saved model's shape is built from
SCRIPT = plumbing.Script("v2", __file__, HYPERPARAMETERS, model_keys=("block_size", "n_embd", "n_head", "n_layer"))


# the data ("reading and exploring the data", "tokenization, train/val split")
def load_data(input_file, block_size):
    """The vocabulary (chars, stoi, itos) and the encoded text, split into train and val data."""
    text = plumbing.read_text(input_file)  # tiny Shakespeare by default (downloaded if missing)
    chars = sorted(set(text))  # every character that occurs in the text
    vocab_size = len(chars)
    plumbing.check_text(input_file, len(text), vocab_size, block_size)
    stoi = {ch: i for i, ch in enumerate(chars)}  # string to integer
    itos = {i: ch for i, ch in enumerate(chars)}  # integer to string
    data = np.array(encode(text, stoi), dtype=np.int64)  # the whole text as token ids
    n = int(0.9 * len(data))  # the first 90% trains, the rest validates
    return chars, stoi, itos, data[:n], data[n:]


def encode(s, stoi):
    """String -> list of integers, one per character ("tokenization" in the video)."""
    unknown = sorted(set(s) - stoi.keys())
    if unknown:
        raise plumbing.UserError(f"characters not in the model's vocabulary: {''.join(unknown)!r}; use only "
                                 "characters that occur in the training text")
    return [stoi[c] for c in s]


def decode(ids, itos):
    """List of integers -> string."""
    return "".join(itos[i] for i in ids)


def get_batch(data, batch_size, block_size, generator):
    """batch_size random chunks of the data ("data loader: batches of chunks of data"): inputs x (B, T), and
    targets y, the same chunks one character on."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()  # B random starts
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])  # (B, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])  # (B, T)
    return x, y


def eval_windows(data, block_size, max_windows, dev):
    """The windows estimate_loss scores, inputs x and targets y (N, T) on dev: every non-overlapping window of the
    data, or max_windows of them spread evenly (0: every one)."""
    n_windows = (len(data) - 1) // block_size
    count = min(n_windows, max_windows) if max_windows else n_windows
    ix = [(i * n_windows // count) * block_size for i in range(count)]  # N start offsets
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])  # (N, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])  # (N, T)
    return x.to(dev), y.to(dev)


@torch.no_grad()
def estimate_loss(model, eval_sets, batch_size):
    """Mean loss over every window of each eval set, in eval mode (no dropout). differs from the video: it
    averages 200 random batches per split, a noisy estimate; this scores every val window (and a fixed sample
    of train windows), so the number is exact and two evaluations of the same model agree."""
    model.eval()
    out = {}
    for split, (x, y) in eval_sets.items():
        total = 0.0
        for i in range(0, len(x), batch_size):
            _, loss = model(x[i:i + batch_size], y[i:i + batch_size])
            total += loss.item() * len(x[i:i + batch_size])
        out[split] = total / len(x)
    model.train()
    return out


# the model: self-attention ("THE CRUX OF THE VIDEO: version 4: self-attention"), then the Transformer around it
# B=batch, T=time, C=n_embd, nh=n_head, hs=head_size, V=vocab_size
class Head(nn.Module):
    """One head of self-attention: each position emits a query, a key and a value of head_size numbers."""

    def __init__(self, n_embd, head_size, block_size, dropout):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))  # a buffer, not a parameter
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape  # (B, T, C)
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        # affinities, scaled by 1/sqrt(head_size): "scaled" self-attention, with the video's fix (head_size, not C)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # (B, T, T): the future cannot communicate
        wei = F.softmax(wei, dim=-1)  # (B, T, T): each row sums to 1
        wei = self.dropout(wei)  # (B, T, T)
        v = self.value(x)  # (B, T, hs)
        out = wei @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)
        return out


class MultiHeadAttention(nn.Module):
    """Several heads of self-attention in parallel ("multi-headed self-attention"), then a projection."""

    def __init__(self, n_embd, n_head, head_size, block_size, dropout):
        super().__init__()
        self.heads = nn.ModuleList([Head(n_embd, head_size, block_size, dropout) for _ in range(n_head)])
        self.proj = nn.Linear(head_size * n_head, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)  # (B, T, nh * hs) = (B, T, C)
        out = self.dropout(self.proj(out))  # (B, T, C)
        return out


class FeedForward(nn.Module):
    """A linear layer to 4x width, a ReLU, and back ("feedforward layers of transformer block")."""

    def __init__(self, n_embd, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)  # (B, T, C)


class Block(nn.Module):
    """Transformer block: communication (attention), then computation (feed-forward)."""

    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        head_size = n_embd // n_head
        self.sa = MultiHeadAttention(n_embd, n_head, head_size, block_size, dropout)
        self.ffwd = FeedForward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))  # (B, T, C): "residual connections", with "layernorm" before each part
        x = x + self.ffwd(self.ln2(x))  # (B, T, C)
        return x


class GPTLanguageModel(nn.Module):
    """Token and position embeddings ("positional encoding"), n_layer blocks, a final LayerNorm, the linear head."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout):
        super().__init__()
        self.block_size = block_size
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)  # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape  # (B, T)
        tok_emb = self.token_embedding_table(idx)  # (B, T, C)
        pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))  # (T, C)
        x = tok_emb + pos_emb  # (B, T, C)
        x = self.blocks(x)  # (B, T, C)
        x = self.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))  # mean over the B*T positions
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=0, generator=None):
        """Append max_new_tokens sampled tokens to idx (B, T), one at a time, each fed back as input."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.block_size:]  # (B, <=block_size): the positions the model has embeddings for
            logits, _ = self(idx_cond)  # (B, T, V)
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx


def build_model(cfg, vocab_size):
    return GPTLanguageModel(vocab_size, cfg["block_size"], cfg["n_embd"], cfg["n_head"], cfg["n_layer"],
                            cfg["dropout"])


# the training loop
def train(cfg, dev, checkpoint=None):
    """The video's script: the data, the model, AdamW and the training loop; then a sample from the model."""
    chars, stoi, itos, train_data, val_data = load_data(cfg["input_file"], cfg["block_size"])
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, len(chars)).to(dev)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    fused = dev in ("cuda", "cpu")  # differs from the video: one kernel updates every parameter at once
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], fused=fused)
    # the windows estimate_loss scores: a fixed sample of the train split, the val split whole
    eval_sets = {"train": eval_windows(train_data, cfg["block_size"], cfg["eval_train_windows"], dev),
                 "val": eval_windows(val_data, cfg["block_size"], 0, dev)}
    # not in the video: resuming, saving the best model, the loss log and the progress bar (plumbing.py)
    run = plumbing.Run(SCRIPT, cfg, model, optimizer, chars, checkpoint)
    with run:
        for step in range(run.start_step, cfg["max_iters"] + 1):
            # every once in a while (and after the last step) evaluate the loss on train and val
            if step % cfg["eval_interval"] == 0 or step == cfg["max_iters"]:
                losses = estimate_loss(model, eval_sets, cfg["eval_batch_size"])
                run.evaluated(step, losses)  # print and log the losses; save the model if it is the best so far
            if step == cfg["max_iters"]:
                break
            xb, yb = get_batch(train_data, cfg["batch_size"], cfg["block_size"], run.batch_generator)
            logits, loss = model(xb.to(dev), yb.to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.stepped(step, loss)  # the progress bar
    run.finished()  # how long it took, and the plot of the losses
    plumbing.show_sample(generate_text(model, cfg, stoi, itos, dev), cfg)  # print it (and save it)


# generation: continue a prompt, one sampled character at a time
def generate_text(model, cfg, stoi, itos, dev):
    generator = torch.Generator(plumbing.sampling_device(dev)).manual_seed(cfg["seed"])
    prompt = plumbing.prompt_text(cfg["prompt"], stoi)  # --prompt, or a newline as in the video
    context = torch.tensor([encode(prompt, stoi)], dtype=torch.long, device=dev)  # (1, T)
    model.eval()
    out = model.generate(context, cfg["max_new_tokens"], cfg["temperature"], cfg["top_k"], generator)  # (1, T+new)
    return decode(out[0].tolist(), itos)


def sample_next(logits, temperature, top_k, generator):
    """The next token id from the last position's logits (B, V) -> (B, 1)."""
    if logits.isnan().any():  # no probability comes out of nan: the weights are damaged (a run that diverged)
        raise plumbing.UserError("the model's output is nan (not a number): its weights are damaged; train it again")
    if temperature == 0 or (logits / temperature).isinf().any():  # 0, or too small to divide by: no randomness
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1): the likeliest token
    logits = logits / temperature  # (B, V): <1 sharper, >1 flatter
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k): top_k is clamped to the vocabulary
        logits[logits < v[:, [-1]]] = -float("inf")  # (B, V)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    probs = probs.to(plumbing.sampling_device(probs.device))  # (B, V): on MPS the draw is made on the CPU
    idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
    return idx_next.to(logits.device)  # (B, 1): on the model's device


# the command line (plumbing.py reads and checks it; a mistake is one line, not a traceback)
def main(argv):
    cfg, _, checkpoint = plumbing.settings(SCRIPT, argv)  # with --sample or --resume: the saved model's settings
    plumbing.check_config(cfg)  # every setting and every path, before any work
    dev = cfg["device"]  # --device, or the best this machine has: CUDA (an NVIDIA GPU), MPS (Apple Silicon), the CPU
    dev = dev or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    plumbing.check_memory(cfg, dev, build_model)  # a model too large for the device is refused now
    print(f"using device: {dev}")
    if cfg["sample"]:
        model = sample_saved_model(cfg, dev, checkpoint)
        if cfg["attention_png"]:
            plumbing.draw_attention(SCRIPT, attention_weights, model, cfg, checkpoint["chars"], dev)
    else:
        train(cfg, dev, checkpoint)


def sample_saved_model(cfg, dev, checkpoint):
    """--sample: the saved model continues the prompt, with the vocabulary it was trained on; returns the model."""
    chars = checkpoint["chars"]
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    model = build_model(cfg, len(chars)).to(dev)
    plumbing.load_weights(SCRIPT, model, checkpoint, os.path.join(cfg["out_dir"], "ckpt.pt"))
    plumbing.show_sample(generate_text(model, cfg, stoi, itos, dev), cfg)  # print it (and save it)
    return model


# --attention_png: the picture of wei, each layer and head (plumbing.draw_attention draws it)
def attention_weights(model, idx):
    """The attention weights wei (n_layer, n_head, T, T) of one sequence idx (1, T): each Head's softmax output,
    caught on its way into the Head's dropout (which is off in eval mode), so they are what the model computes."""
    weights = []
    hooks = [head.dropout.register_forward_hook(lambda module, inputs, output: weights.append(inputs[0][0]))
             for block in model.blocks for head in block.sa.heads]
    try:
        model.eval()
        with torch.no_grad():
            model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    n_layer, n_head = len(model.blocks), len(model.blocks[0].sa.heads)
    return torch.stack(weights).view(n_layer, n_head, *weights[0].shape)


if __name__ == "__main__":
    plumbing.run(main)  # main(sys.argv[1:]); a mistake the user can fix ends in one `error:` line, Ctrl-C in one line
