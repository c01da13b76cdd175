"""The first hour of the video, the notebook, as tests: read this file top to bottom beside the video.

One test per moment of the notebook, in the video's order and named for its chapter: the data, batches, the bigram
loss, the trick (versions 1 to 3), version 4 (self-attention), the six notes on attention, and LayerNorm. With the
video's seeds, the numbers asserted are the ones on screen; the models are the lessons' own (bigram.py, v2.py).
Run:    python -m pytest tests/test_the_video.py -v      (reads input.txt, which is part of the repository)
"""

import hashlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import ROOT
from torch.nn import functional as F

import bigram
import plumbing
import v2

VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # the 65 characters the video prints


# --- "reading and exploring the data", "tokenization, train/val split" ---
# input.txt is part of the repository: every test reads it as it is, none downloads it or skips without it
def test_input_txt_is_tiny_shakespeare_byte_for_byte_as_the_scripts_check_it():
    content = (ROOT / "input.txt").read_bytes()
    assert len(content) == plumbing.DATA_SIZE == 1115394
    assert hashlib.sha256(content).hexdigest() == plumbing.DATA_SHA256  # a checkout that turned \n into \r\n fails here


@pytest.fixture(scope="module")
def shakespeare():
    """tiny Shakespeare, read, encoded and split by v2.py's load_data."""
    path = ROOT / "input.txt"
    chars, stoi, itos, train_data, val_data = v2.load_data(str(path), block_size=8)
    return SimpleNamespace(text=path.read_text(encoding="utf-8"), chars=chars, stoi=stoi, itos=itos,
                           train_data=train_data, val_data=val_data)


def test_reading_the_data_gives_1115394_characters_and_a_vocabulary_of_65(shakespeare):
    assert len(shakespeare.text) == 1115394  # "length of dataset in characters:  1115394"
    assert "".join(shakespeare.chars) == VOCAB
    assert len(shakespeare.chars) == 65  # vocab_size


def test_tokenization_encodes_hii_there_as_in_the_video_and_decodes_it_back(shakespeare):
    ids = v2.encode("hii there", shakespeare.stoi)
    assert ids == [46, 47, 47, 1, 58, 46, 43, 56, 43]
    assert v2.decode(ids, shakespeare.itos) == "hii there"


def test_train_val_split_keeps_the_first_90_percent_for_training(shakespeare):
    data = np.array(v2.encode(shakespeare.text, shakespeare.stoi))  # the whole text as ids: 1115394 of them
    n = int(0.9 * len(data))  # first 90% will be train, rest val
    assert n == 1003854
    assert np.array_equal(shakespeare.train_data, data[:n])
    assert np.array_equal(shakespeare.val_data, data[n:])


def test_a_chunk_of_block_size_plus_one_characters_holds_block_size_examples(shakespeare):
    block_size = 8
    assert shakespeare.train_data[:block_size + 1].tolist() == [18, 47, 56, 57, 58, 1, 15, 47, 58]
    x = shakespeare.train_data[:block_size]
    y = shakespeare.train_data[1:block_size + 1]
    examples = []
    for t in range(block_size):
        context = x[:t + 1]
        target = y[t]
        examples.append((context.tolist(), target.item()))  # "when input is [18, 47] the target: 56"
    assert examples == [([18], 47), ([18, 47], 56), ([18, 47, 56], 57), ([18, 47, 56, 57], 58),
                        ([18, 47, 56, 57, 58], 1), ([18, 47, 56, 57, 58, 1], 15),
                        ([18, 47, 56, 57, 58, 1, 15], 47), ([18, 47, 56, 57, 58, 1, 15, 47], 58)]


# --- "data loader: batches of chunks of data" ---
def test_data_loader_batches_are_chunks_and_their_next_characters(shakespeare):
    generator = torch.Generator().manual_seed(1337)  # the video's torch.manual_seed(1337): the same random numbers
    xb, yb = v2.get_batch(shakespeare.train_data, batch_size=4, block_size=8, generator=generator)
    assert xb.shape == yb.shape == (4, 8) and xb.dtype == yb.dtype == torch.int64
    assert xb.tolist() == [[24, 43, 58, 5, 57, 1, 46, 43],  # inputs
                           [44, 53, 56, 1, 58, 46, 39, 58],
                           [52, 58, 1, 58, 46, 39, 58, 1],
                           [25, 17, 27, 10, 0, 21, 1, 54]]
    assert yb.tolist() == [[43, 58, 5, 57, 1, 46, 43, 39],  # targets: each chunk, one character on
                           [53, 56, 1, 58, 46, 39, 58, 1],
                           [58, 1, 58, 46, 39, 58, 1, 46],
                           [17, 27, 10, 0, 21, 1, 54, 39]]


# --- "simplest baseline: bigram language model, loss, generation" ---
def test_bigram_loss_at_initialisation_is_near_minus_ln_one_over_65(shakespeare):
    xb, yb = v2.get_batch(shakespeare.train_data, 4, 8, torch.Generator().manual_seed(1337))  # the batch above
    torch.manual_seed(1337)
    model = bigram.BigramLanguageModel(vocab_size=65)
    logits, loss = model(xb, yb)
    assert logits.shape == (4, 8, 65)  # the video's (32, 65) is these B*T rows, flattened for the loss
    uniform_guess = -math.log(1 / 65)  # 4.17: the loss if every character got probability 1/65
    assert loss.item() == pytest.approx(4.8786, abs=1e-4)  # on screen
    assert abs(loss.item() - uniform_guess) < 1  # near it; above it, as the random initial logits are not uniform
    nn.init.zeros_(model.token_embedding_table.weight)  # all logits equal: a uniform guess
    assert model(xb, yb)[1].item() == pytest.approx(uniform_guess, abs=1e-5)


# --- "version 1: averaging past context with for loops, the weakest form of aggregation" ---
def version_1():
    """The video's toy x (B, T, C) = (4, 8, 2), and xbow[b, t], the mean of x[b, :t+1] ("bag of words")."""
    torch.manual_seed(1337)
    B, T, C = 4, 8, 2  # batch, time, channels
    x = torch.randn(B, T, C)
    xbow = torch.zeros((B, T, C))
    for b in range(B):
        for t in range(T):
            xprev = x[b, :t + 1]  # (t+1, C)
            xbow[b, t] = torch.mean(xprev, 0)
    return x, xbow


def test_version_1_averaging_past_context_with_for_loops():
    x, xbow = version_1()
    assert torch.allclose(x[0], torch.tensor([[0.1808, -0.0700], [-0.3596, -0.9152], [0.6258, 0.0255],
                                              [0.9545, 0.0643], [0.3612, 1.1679], [-1.3499, -0.5102],
                                              [0.2360, -0.2398], [-0.9211, 1.5433]]), atol=1e-4)
    assert torch.allclose(xbow[0], torch.tensor([[0.1808, -0.0700], [-0.0894, -0.4926], [0.1490, -0.3199],
                                                 [0.3504, -0.2238], [0.3525, 0.0545], [0.0688, -0.0396],
                                                 [0.0927, -0.0682], [-0.0341, 0.1332]]), atol=1e-4)


# --- "the trick in self-attention: matrix multiply as weighted aggregation" ---
def test_the_trick_matrix_multiply_as_weighted_aggregation():
    torch.manual_seed(42)
    a = torch.tril(torch.ones(3, 3))
    a = a / torch.sum(a, 1, keepdim=True)
    b = torch.randint(0, 10, (3, 2)).float()
    c = a @ b
    assert b.tolist() == [[2, 7], [6, 4], [6, 5]]
    assert torch.allclose(c, torch.tensor([[2, 7], [4, 5.5], [14 / 3, 16 / 3]]))  # 4.6667, 5.3333 on screen
    assert torch.allclose(c, b.cumsum(0) / torch.tensor([[1.0], [2.0], [3.0]]))  # row i: the mean of b's rows 0..i


# --- "version 2: using matrix multiply" ---
def test_version_2_matrix_multiply_gives_the_same_xbow():
    x, xbow = version_1()
    T = x.shape[1]
    wei = torch.tril(torch.ones(T, T))
    wei = wei / wei.sum(1, keepdim=True)
    xbow2 = wei @ x  # (T, T) @ (B, T, C) ----> (B, T, C)
    assert torch.allclose(xbow, xbow2, atol=1e-6)  # True in the video; the two sum in another order, 3e-8 apart


# --- "version 3: adding softmax" ---
def test_version_3_softmax_gives_the_same_xbow():
    x, xbow = version_1()
    T = x.shape[1]
    tril = torch.tril(torch.ones(T, T))
    wei = torch.zeros((T, T))  # affinities, all equal for now: version 4 makes them depend on the data
    wei = wei.masked_fill(tril == 0, float("-inf"))  # tokens from the future cannot communicate
    wei = F.softmax(wei, dim=-1)
    xbow3 = wei @ x
    assert torch.allclose(xbow, xbow3, atol=1e-6)


# --- "THE CRUX OF THE VIDEO: version 4: self-attention", with v2.py's Head ---
def version_4():
    """The video's setup: x (B, T, C) = (4, 8, 32), and a single Head of head_size 16, built by v2.py."""
    torch.manual_seed(1337)
    B, T, C = 4, 8, 32  # batch, time, channels
    x = torch.randn(B, T, C)
    head = v2.Head(n_embd=C, head_size=16, block_size=T, dropout=0.0)
    return x, head


def attend(head, x):
    """A Head's output (B, T, hs) and its weights wei (B, T, T), caught on their way into the Head's dropout."""
    caught = []
    hook = head.dropout.register_forward_hook(lambda module, inputs, output: caught.append(inputs[0]))
    with torch.no_grad():
        out = head(x)
    hook.remove()
    return out, caught[0]


def encoder(head):
    """The head with its masked_fill line made a no-op (a tril of ones masks nothing): an encoder head."""
    head.tril.fill_(1.0)
    return head


def test_version_4_self_attention_weights_depend_on_the_data():
    x, head = version_4()
    out, wei = attend(head, x)
    assert out.shape == (4, 8, 16)
    assert not torch.allclose(wei[0], wei[1])  # each sequence gets its own weights, from its queries and keys
    assert torch.allclose(wei.sum(-1), torch.ones(4, 8))  # each row sums to 1
    assert torch.equal(wei.triu(1), torch.zeros(4, 8, 8))  # the future gets exactly 0
    assert torch.allclose(out, wei @ head.value(x))  # out = wei @ v
    # the video prints wei[0] before note 6 scales the logits by 1/sqrt(16) = 1/4; the 4th power, renormalised,
    # undoes that scale and gives the rows on screen
    unscaled = wei[0] ** 4 / (wei[0] ** 4).sum(-1, keepdim=True)
    assert torch.allclose(unscaled, torch.tensor([[1.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                                                  [0.1574, 0.8426, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                                                  [0.2088, 0.1646, 0.6266, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                                                  [0.5792, 0.1187, 0.1889, 0.1131, 0.0000, 0.0000, 0.0000, 0.0000],
                                                  [0.0294, 0.1052, 0.0469, 0.0276, 0.7909, 0.0000, 0.0000, 0.0000],
                                                  [0.0176, 0.2689, 0.0215, 0.0089, 0.6812, 0.0019, 0.0000, 0.0000],
                                                  [0.1691, 0.4066, 0.0438, 0.0416, 0.1048, 0.2012, 0.0329, 0.0000],
                                                  [0.0210, 0.0843, 0.0555, 0.2297, 0.0573, 0.0709, 0.2423, 0.2391]]),
                          atol=1e-4)


# --- the notes on attention ---
def test_note_1_attention_as_communication_in_a_directed_graph():
    """8 nodes; node t receives from the nodes pointing to it (0 to t) the sum of their values, weighted by wei[t]."""
    x, head = version_4()
    out, wei = attend(head, x)
    v = head.value(x)  # (B, T, hs): what each node communicates
    for t in range(8):
        assert (wei[:, t, :t + 1] >= 0).all() and torch.allclose(wei[:, t, :t + 1].sum(-1), torch.ones(4))
        received = sum(wei[:, t, s, None] * v[:, s] for s in range(t + 1))  # (B, hs)
        assert torch.allclose(out[:, t], received, atol=1e-6)
    assert torch.allclose(out[:, 0], v[:, 0])  # node 0 only sees itself


def test_note_2_attention_has_no_notion_of_space_it_operates_over_sets():
    """Without positions (and without the mask) attention sees a set: shuffling x shuffles the output the same way.
    This is why the model adds a position embedding to each token's embedding."""
    x, head = version_4()
    head = encoder(head)
    shuffle = torch.tensor([3, 0, 7, 5, 1, 6, 2, 4])  # new order of the 8 positions
    assert torch.allclose(attend(head, x[:, shuffle])[0], attend(head, x)[0][:, shuffle], atol=1e-6)
    pos = torch.randn(8, 32)  # (T, C): a position embedding, one vector per position
    assert not torch.allclose(attend(head, x[:, shuffle] + pos)[0], attend(head, x + pos)[0][:, shuffle], atol=1e-3)


def test_note_3_no_communication_across_the_batch_dimension():
    x, head = version_4()
    other = x.clone()
    other[1] = torch.randn(8, 32)  # another sequence in row 1 of the batch
    out, out_other = attend(head, x)[0], attend(head, other)[0]
    assert not torch.allclose(out_other[1], out[1])
    assert torch.allclose(out_other[[0, 2, 3]], out[[0, 2, 3]])  # the other sequences never see it


def test_note_4_encoder_blocks_see_the_future_and_decoder_blocks_do_not():
    x, decoder_head = version_4()  # v2.py's Head, as is: a decoder block's attention
    encoder_head = encoder(version_4()[1])  # the same weights, without the mask
    later = x.clone()
    later[:, -1] = torch.randn(4, 32)  # change the last token only
    out, out_later = attend(decoder_head, x)[0], attend(decoder_head, later)[0]
    assert torch.allclose(out_later[:, :-1], out[:, :-1])  # the past does not see the future
    assert not torch.allclose(out_later[:, -1], out[:, -1])
    out, out_later = attend(encoder_head, x)[0], attend(encoder_head, later)[0]
    assert not torch.allclose(out_later[:, 0], out[:, 0])  # every position sees every other, the last one included


def test_note_5_cross_attention_takes_keys_and_values_from_another_source():
    """Self-attention: queries, keys and values all come from x. Cross-attention: queries from x, keys and values
    from another source (in the paper's encoder-decoder, the encoder's output)."""
    x, head = version_4()

    def cross_attention(x, source):
        q = head.query(x)  # (B, T, hs): what each position of x looks for
        k, v = head.key(source), head.value(source)  # (B, T_source, hs): what the source holds, and gives
        wei = F.softmax(q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5, dim=-1)  # (B, T, T_source), no mask
        return wei @ v  # (B, T, hs)

    source = torch.randn(4, 5, 32)  # (B, T_source, C): other sequences, of another length
    out = cross_attention(x, source)
    assert out.shape == (4, 8, 16)  # one output per position of x
    assert not torch.allclose(cross_attention(x, torch.randn(4, 5, 32)), out)  # another source, another output
    assert torch.allclose(cross_attention(x, x), attend(encoder(head), x)[0], atol=1e-6)  # source x: self-attention


def test_note_6_scaled_attention_keeps_the_variance_near_one():
    """q and k of unit variance give q @ k^T a variance of about head_size, which makes softmax sharp (next test);
    multiplying by head_size**-0.5 brings it back to about 1: "scaled" attention, as v2.py's Head does."""
    version_4()  # this cell runs right after version 4's: the same random numbers as the video
    B, T, head_size = 4, 8, 16
    k = torch.randn(B, T, head_size)
    q = torch.randn(B, T, head_size)
    wei = q @ k.transpose(-2, -1)
    scaled = wei * head_size ** -0.5
    assert 0.75 * head_size < wei.var() < 1.25 * head_size  # about head_size
    assert 0.75 < scaled.var() < 1.25  # about 1
    on_screen = [1.0449, 1.0700, 17.4690, 1.0918]  # k.var(), q.var(), wei.var() without and with the scale
    assert [k.var().item(), q.var().item(), wei.var().item(), scaled.var().item()] == pytest.approx(on_screen, abs=1e-4)


def test_note_6_softmax_of_sharp_logits_goes_towards_one_hot():
    logits = torch.tensor([0.1, -0.2, 0.3, -0.2, 0.5])
    diffuse = torch.softmax(logits, dim=-1)
    sharp = torch.softmax(logits * 8, dim=-1)  # "gets too peaky, converges to one-hot"
    assert torch.allclose(diffuse, torch.tensor([0.1925, 0.1426, 0.2351, 0.1426, 0.2872]), atol=1e-4)
    assert torch.allclose(sharp, torch.tensor([0.0326, 0.0030, 0.1615, 0.0030, 0.8000]), atol=1e-4)
    assert diffuse.max() < 0.3 and sharp.max() > 0.75  # the largest logit takes most of the weight
    assert (sharp[:4] < diffuse[:4]).all()  # every other weight shrinks: a node would hear from one node only


# --- "layernorm (and its relationship to our previous batchnorm)" ---
class LayerNorm1d:  # (used to be BatchNorm1d)

    def __init__(self, dim, eps=1e-5):
        self.eps = eps
        self.gamma = torch.ones(dim)
        self.beta = torch.zeros(dim)

    def __call__(self, x):
        xmean = x.mean(1, keepdim=True)  # mean of each row, one example's features (batch norm: x.mean(0))
        xvar = x.var(1, keepdim=True)  # variance of each row
        xhat = (x - xmean) / torch.sqrt(xvar + self.eps)  # normalize to unit variance
        self.out = self.gamma * xhat + self.beta
        return self.out


def test_layernorm_normalises_each_row_not_each_column():
    """Batch norm normalises each column, one feature across the batch; layer norm each row, one token's features,
    so a token's normalisation does not depend on the other examples in its batch."""
    torch.manual_seed(1337)
    module = LayerNorm1d(100)
    x = torch.randn(32, 100)  # batch size 32 of 100-dimensional vectors
    out = module(x)
    assert torch.allclose(out.mean(1), torch.zeros(32), atol=1e-6)  # each row: mean 0 (row 0: -9.5367e-09)
    assert torch.allclose(out.std(1), torch.ones(32), atol=1e-4)  # and std 1.0000
    assert [out[:, 0].mean().item(), out[:, 0].std().item()] == pytest.approx([0.1469, 0.8803], abs=1e-4)  # a column
    layer_norm = v2.Block(n_embd=100, n_head=4, block_size=8, dropout=0.0).ln1  # nn.LayerNorm(100), as in v2.py
    # nn.LayerNorm divides by the variance with 1/n, the video's x.var by the one with 1/(n-1)
    assert torch.allclose(layer_norm(x), out * (100 / 99) ** 0.5, atol=1e-4)
