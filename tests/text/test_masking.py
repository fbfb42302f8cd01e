"""The masking process and the MDLM ELBO, against brute-force enumeration."""

import itertools
import math

import pytest
import torch

from diffuse.text.bound import mdlm_bound
from diffuse.text.masking import MaskSchedule, antithetic_times, mask_tokens
from diffuse.text.objectives import mdlm_elbo, mdlm_elbo_at
from diffuse.text.transformer import TextNetConfig, TextTransformer

V, L = 3, 4  # a small vocabulary and length: 2^L mask patterns to enumerate


@pytest.fixture(scope="module")
def net(one_thread) -> TextTransformer:
    torch.manual_seed(0)
    net = TextTransformer(TextNetConfig(vocab_size=V, width=16, depth=1, heads=2, max_length=L))
    with torch.no_grad():  # sharpen the random predictions so the masks matter
        for p in net.parameters():
            p.mul_(8.0)
    return net.eval().requires_grad_(False)


X0 = torch.tensor([[0, 2, 1, 2]])


def masked_nll(net: TextTransformer, pattern: tuple[int, ...]) -> float:
    """f(M) = sum over masked i of -log p(x0_i | x0 with M masked), by direct evaluation."""
    masked = torch.tensor([pattern], dtype=torch.bool)
    x = torch.where(masked, torch.full_like(X0, V), X0)
    logp = torch.log_softmax(net(x).double(), dim=-1)[0]
    return float(sum(-logp[i, X0[0, i]] for i in range(L) if pattern[i]))


def closed_form(net: TextTransformer) -> float:
    """The continuous-time NELBO without any weighting function: integrating
    w(t) (1 - alpha)^k alpha^(L - k) over t gives B(k, L - k + 1) = 1 / (k C(L, k)) for any
    schedule, so NELBO = sum_M f(M) / (|M| C(L, |M|)) (the any-order autoregressive form)."""
    total = 0.0
    for pattern in itertools.product((0, 1), repeat=L):
        k = sum(pattern)
        if k:
            total += masked_nll(net, pattern) / (k * math.comb(L, k))
    return total


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_elbo_weight_integrates_to_the_brute_force_bound(net, kind):
    """Quadrature over t of elbo_weight(t) x the exact expectation over all 2^L masks."""
    schedule = MaskSchedule(kind)
    n = 20000
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # midpoint rule on (0, 1)
    alpha, weight = schedule.alpha(t), schedule.elbo_weight(t)
    expected = torch.zeros_like(t)
    for pattern in itertools.product((0, 1), repeat=L):
        k = sum(pattern)
        if k:
            expected += (1 - alpha) ** k * alpha ** (L - k) * masked_nll(net, pattern)
    integral = float((weight * expected).mean())
    assert integral == pytest.approx(closed_form(net), rel=2e-3)


def test_elbo_weight_matches_the_derivative():
    for kind in ("linear", "cosine"):
        s = MaskSchedule(kind)
        t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64).requires_grad_(True)
        (grad,) = torch.autograd.grad(s.alpha(t).sum(), t)
        assert torch.allclose(s.alpha_derivative(t), grad)
        assert torch.allclose(s.elbo_weight(t), -grad / (1 - s.alpha(t)))
        assert float(s.alpha(torch.tensor(0.0))) == 1.0
        assert float(s.alpha(torch.tensor(1.0))) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_monte_carlo_loss_is_unbiased(net, kind):
    """The training loss (antithetic times, sampled masks) averages to the exact bound."""
    schedule, g = MaskSchedule(kind), torch.Generator().manual_seed(1)
    x0 = X0.expand(256, L)
    with torch.no_grad():
        draws = torch.cat(
            [mdlm_elbo_at(net, x0, antithetic_times(256, g), schedule, g) for _ in range(16)]
        )
        loss = float(mdlm_elbo(net, x0, schedule, g)) * L
    exact = closed_form(net)
    se = float(draws.std()) / math.sqrt(draws.numel())  # iid-bound; stratification only helps
    assert abs(float(draws.mean()) - exact) < 4 * se
    assert loss == pytest.approx(exact, rel=0.3)


def test_bound_estimate_and_its_standard_error(net):
    """mdlm_bound's estimate lies within a few of its own standard errors of the exact value,
    and the error shrinks like 1/sqrt(times)."""
    windows = X0.expand(64, L).contiguous()
    exact_bits = closed_form(net) / (L * math.log(2))
    few = mdlm_bound(net, windows, MaskSchedule("linear"), times=4, seed=3)
    many = mdlm_bound(net, windows, MaskSchedule("linear"), times=16, seed=4)
    for score in (few, many):
        assert abs(score.bits_per_char - exact_bits) < 4 * score.standard_error
    assert many.standard_error < few.standard_error
    again = mdlm_bound(net, windows, MaskSchedule("linear"), times=4, seed=3)
    assert again == few  # same seed, same estimate


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_masking_rate_follows_alpha(kind, t):
    schedule = MaskSchedule(kind)
    n = 200_000
    alpha = schedule.alpha(torch.tensor([t]))
    x0 = torch.randint(0, V, (1, n), generator=torch.Generator().manual_seed(0))
    x_t, masked = mask_tokens(x0, alpha, V, torch.Generator().manual_seed(1))
    p = 1 - float(alpha)
    assert abs(float(masked.float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(x_t == V, masked)
    assert torch.equal(x_t[~masked], x0[~masked])  # unmasked tokens are the clean ones


def test_antithetic_times_cover_the_interval():
    t = antithetic_times(8, torch.Generator().manual_seed(0))
    assert ((t > 0) & (t <= 1)).all()
    strata = torch.sort(torch.floor((1 - t) * 8)).values  # one time per eighth of [0, 1)
    assert torch.equal(strata, torch.arange(8, dtype=torch.float32))


def test_schedule_name_is_checked():
    with pytest.raises(ValueError, match="'linear', 'cosine'"):
        MaskSchedule("geometric")  # type: ignore[arg-type]
