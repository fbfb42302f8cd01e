"""The Denoiser: parametrisations agree, match their textbook definitions, and validate input."""

import pytest
import torch
from torch import nn

from diffuse.denoiser import Denoiser, Parametrization
from diffuse.losses import denoising_loss
from diffuse.processes import EDM, VE, CosineVP, DiscreteVP, RectifiedFlow

PROCESSES = [DiscreteVP(), CosineVP(), VE(), EDM(), RectifiedFlow(shift=2.0)]


class TargetNet(nn.Module):
    """A 'network' that outputs a fixed raw tensor, recording its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: torch.Tensor | None = None
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x_in, c_noise, **cond):
        self.seen = (x_in, c_noise)
        return self.raw


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    return x0, eps


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_parametrisations_encoding_the_same_prediction_give_the_same_x0(process):
    x0, eps = _data()
    t = process.sample_t(6, torch.Generator().manual_seed(5))
    level = process.level(t)
    x = x0 + level.reshape(-1, 1, 1, 1) * eps
    alpha = process.alpha(t).reshape(-1, 1, 1, 1)
    sigma = process.sigma(t).reshape(-1, 1, 1, 1)
    d_alpha, d_sigma = process.alpha_sigma_derivatives(t)
    d_alpha, d_sigma = d_alpha.reshape(-1, 1, 1, 1), d_sigma.reshape(-1, 1, 1, 1)
    # Textbook raw outputs for the prediction "x0 is x0, the noise is eps".
    raw_outputs = {
        Parametrization.EPS: eps,
        Parametrization.X0: x0,
        Parametrization.V: alpha * eps - sigma * x0,
        Parametrization.VELOCITY: d_alpha * x0 + d_sigma * eps,
    }
    net = TargetNet()
    for parametrization, raw in raw_outputs.items():
        denoiser = Denoiser(net, process, parametrization)
        net.raw = raw
        torch.testing.assert_close(denoiser(x, level), x0, rtol=1e-9, atol=1e-9)
        # The network sees the process's own x_t = alpha x0 + sigma eps.
        torch.testing.assert_close(net.seen[0], alpha * x0 + sigma * eps)
        torch.testing.assert_close(net.seen[1], process.c_noise(t))


def test_rectified_flow_velocity_is_eps_minus_x0():
    x0, eps = _data(1)
    net = TargetNet()
    net.raw = eps - x0
    denoiser = Denoiser(net, RectifiedFlow(), "velocity")
    t = torch.full((6,), 0.3, dtype=torch.float64)
    x = x0 + (t / (1 - t)).reshape(-1, 1, 1, 1) * eps
    torch.testing.assert_close(denoiser(x, t / (1 - t)), x0)


def test_edm_preconditioning_matches_karras_table_1():
    x0, eps = _data(2)
    sigma, sigma_data = 1.7, 0.5
    x = x0 + sigma * eps
    net = TargetNet()
    net.raw = torch.randn_like(x0)
    out = Denoiser(net, EDM(), "edm")(x, sigma)
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
    torch.testing.assert_close(out, c_skip * x + c_out * net.raw)
    torch.testing.assert_close(net.seen[0], c_in * x)
    torch.testing.assert_close(
        net.seen[1], torch.full((6,), torch.log(torch.tensor(sigma)).item() / 4, dtype=x.dtype)
    )


def test_loss_natural_weighting_is_the_parametrisation_mse():
    x0, eps = _data(3)
    net = TargetNet()
    net.raw = torch.zeros_like(x0)
    process = DiscreteVP()
    t = torch.tensor([0.0, 10, 100, 500, 900, 999], dtype=torch.float64)
    loss = denoising_loss(Denoiser(net, process, "eps"), x0, t=t, noise=eps)
    torch.testing.assert_close(loss, eps.pow(2).flatten(1).mean(1))
    # min-SNR-gamma for eps prediction: weight min(snr, gamma) / snr (Hang et al. 2023).
    snr = 1 / process.level(t) ** 2
    min_snr = denoising_loss(
        Denoiser(net, process, "eps"), x0, t=t, noise=eps, weighting="min_snr", min_snr_gamma=5
    )
    torch.testing.assert_close(min_snr, loss * snr.clamp(max=5) / snr)


def test_loss_process_weighting_for_edm_is_lambda_times_x0_error():
    x0, eps = _data(4)
    net = TargetNet()
    net.raw = torch.full_like(x0, 0.25)
    process = EDM()
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 50.0], dtype=torch.float64)
    denoiser = Denoiser(net, process, "edm")
    loss = denoising_loss(denoiser, x0, t=sigma, noise=eps, weighting="process")
    x = x0 + sigma.reshape(-1, 1, 1, 1) * eps
    err = (denoiser(x, sigma) - x0).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(loss, process.loss_weight(sigma) * err)
    natural = denoising_loss(denoiser, x0, t=sigma, noise=eps)
    torch.testing.assert_close(natural, loss)  # EDM's lambda makes the F-space loss unweighted


def test_loss_is_differentiable_and_per_sample():
    net = nn.Conv2d(2, 2, 1).double()

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = net

        def forward(self, x, c_noise):
            return self.body(x)

    x0, _ = _data(5)
    loss = denoising_loss(Denoiser(Wrapped(), CosineVP(), "v"), x0)
    assert loss.shape == (6,)
    loss.mean().backward()
    assert net.weight.grad is not None


def test_bad_inputs_are_named():
    denoiser = Denoiser(TargetNet(), EDM(), "edm")
    with pytest.raises(ValueError, match="magic"):
        Parametrization.parse("magic")
    with pytest.raises(ValueError, match="-1.0"):
        denoiser(torch.zeros(2, 3), torch.tensor(-1.0))
    with pytest.raises(ValueError, match=r"\[2\]"):
        denoiser(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        denoising_loss(denoiser, torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="l3"):
        denoising_loss(denoiser, torch.zeros(2, 3), weighting="l3")
