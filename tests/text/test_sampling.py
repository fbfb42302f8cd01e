"""The text samplers: given characters are kept, the cache changes nothing, seeds are per
sample, blocks go left to right, and bad settings fail with a clear message."""

import pytest
import torch

from diffuse.text.masking import MaskSchedule
from diffuse.text.sampling import Decoding, autoregressive, filter_probs, unmask
from diffuse.text.transformer import TextNetConfig, TextTransformer

V, L = 6, 24
MASK = V


def make(**kw) -> TextTransformer:
    torch.manual_seed(0)
    net = TextTransformer(
        TextNetConfig(vocab_size=V, width=16, depth=2, heads=2, max_length=L, **kw)
    )
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def net(one_thread) -> TextTransformer:
    return make()


def start(batch: int = 3) -> torch.Tensor:
    """Given characters at both ends and in the middle; masks elsewhere."""
    x = torch.full((batch, L), MASK)
    x[:, :4] = torch.tensor([0, 1, 2, 3])
    x[:, 10:12] = 4
    x[:, -3:] = 5
    return x


SETTINGS = [
    ("ancestral", 0),
    ("confidence", 0),
    ("ancestral", 5),
    ("confidence", 5),
]


@pytest.mark.parametrize("sampler, block", SETTINGS)
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_given_and_revealed_characters_never_change(net, sampler, block, kind):
    x = start()
    given = x != MASK
    history = []
    out = unmask(
        net, x, 9, [0, 1, 2], schedule=MaskSchedule(kind), sampler=sampler, block_length=block,
        callback=lambda info: history.append(info.tokens.clone()),
    )  # fmt: skip
    assert len(history) == 9
    assert (out != MASK).all() and (out < V).all()
    assert torch.equal(out[given], x[given])
    previous = x
    for tokens in history:  # once revealed, a character stays; masks only ever decrease
        revealed = previous != MASK
        assert torch.equal(tokens[revealed], previous[revealed])
        previous = tokens
    assert torch.equal(previous, out)


@pytest.mark.parametrize("sampler, block", SETTINGS)
def test_cache_gives_identical_output(net, sampler, block):
    evaluated = []
    cached = unmask(
        net, start(), 15, [5, 6, 7], sampler=sampler, block_length=block,
        callback=lambda info: evaluated.append(info.evaluated),
    )  # fmt: skip
    plain = unmask(net, start(), 15, [5, 6, 7], sampler=sampler, block_length=block, cache=False)
    assert torch.equal(cached, plain)
    if sampler == "ancestral":  # some of 15 steps for 15 characters reveal nothing
        assert not all(evaluated)


def test_time_conditioned_network_is_never_cached():
    net = make(time_conditioning=True)
    evaluated = []
    unmask(
        net,
        start(1),
        15,
        [0],
        sampler="ancestral",
        callback=lambda i: evaluated.append(i.evaluated),
    )
    assert all(evaluated)


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_seeds_are_per_sample(net, sampler):
    batch = unmask(net, start(3), 8, [11, 12, 13], sampler=sampler)
    alone = unmask(net, start(1), 8, [12], sampler=sampler)
    again = unmask(net, start(3), 8, [11, 12, 13], sampler=sampler)
    assert torch.equal(batch, again)
    assert torch.equal(batch[1:2], alone)
    assert not torch.equal(batch[0], batch[2])


def test_blocks_are_decoded_left_to_right(net):
    x = torch.full((1, L), MASK)
    seen = []
    unmask(net, x, 8, [0], block_length=6, callback=lambda info: seen.append(info.tokens.clone()))
    # 4 blocks, 2 steps each: after the 2nd step the first block is done and nothing else moved
    after_first = seen[1][0]
    assert (after_first[:6] != MASK).all() and (after_first[6:] == MASK).all()
    after_one_step = seen[0][0]
    assert (after_one_step[6:] == MASK).all()


def test_confidence_sampler_reveals_on_schedule(net):
    x = torch.full((1, L), MASK)
    counts = []
    unmask(
        net,
        x,
        4,
        [0],
        sampler="confidence",
        callback=lambda i: counts.append(int((i.tokens == MASK).sum())),
    )
    assert counts == [18, 12, 6, 0]  # a linear schedule: a quarter of 24 per step


def test_low_temperature_is_greedy(net):
    greedy = unmask(
        net, start(2), 15, [0, 1], sampler="confidence", decoding=Decoding(temperature=1e-4)
    )
    assert torch.equal(greedy[0], greedy[1])  # the seeds no longer matter


def test_top_k_and_top_p_filter():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.allclose(
        filter_probs(logits, Decoding(top_k=2)), torch.tensor([[0.625, 0.375, 0, 0]])
    )
    assert torch.allclose(
        filter_probs(logits, Decoding(top_p=0.7)), torch.tensor([[0.625, 0.375, 0, 0]])
    )
    assert torch.allclose(filter_probs(logits, Decoding(top_p=0.5)), torch.tensor([[1.0, 0, 0, 0]]))
    assert torch.allclose(filter_probs(logits, Decoding()), torch.exp(logits))
    for bad in ({"temperature": 0}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Decoding(**bad)


@pytest.mark.parametrize("steps", [0, -1, 16])
def test_steps_out_of_range(net, steps):
    with pytest.raises(ValueError, match=rf"steps = {steps} must be between 1 and .*\(15\)"):
        unmask(net, start(1), steps, [0])


def test_more_blocks_than_steps(net):
    with pytest.raises(ValueError, match="fewer than the 4 blocks"):
        unmask(net, torch.full((1, L), MASK), 3, [0], block_length=6)


def test_wrong_network_direction():
    with pytest.raises(ValueError, match="bidirectional"):
        unmask(make(causal=True), start(1), 4, [0])
    with pytest.raises(ValueError, match="causal"):
        autoregressive(make(), torch.zeros(1, 2, dtype=torch.long), 4, [0])


def test_autoregressive_keeps_the_prompt_and_is_seeded():
    ar = make(causal=True)
    prompt = torch.tensor([[1, 2, 3], [1, 2, 3]])
    out = autoregressive(ar, prompt, 10, [4, 5])
    assert out.shape == (2, 13) and torch.equal(out[:, :3], prompt)
    assert torch.equal(autoregressive(ar, prompt[:1], 10, [5]), out[1:])
    with pytest.raises(ValueError, match="length must be >= 1"):
        autoregressive(ar, prompt, 0, [4, 5])
