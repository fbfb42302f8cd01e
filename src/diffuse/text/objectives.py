"""Training objectives of the text models: the masked diffusion ELBO and next-token
cross-entropy, both in nats per token.

Masked diffusion (Sahoo et al. 2024, MDLM, Eq. 10-11; Shi et al. 2024, MD4): with the
zero-masking / carry-over parametrisation (the denoiser never predicts the mask token, and an
unmasked input token is copied to the output with probability 1), the continuous-time negative
ELBO of a sequence x0 is

    -log p(x0) <= E_{t ~ U(0, 1], x_t ~ q(.|x0)} [ -alpha'(t) / (1 - alpha(t))
                                                    * sum_{i masked in x_t} -log p(x0_i | x_t) ]

(every unmasked position contributes 0: the carried-over token is right with probability 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffuse.text.masking import MaskSchedule, antithetic_times, mask_tokens
from diffuse.text.transformer import TextTransformer

__all__ = ["ar_nll", "masked_cross_entropy", "mdlm_elbo", "mdlm_elbo_at"]


def masked_cross_entropy(logits: Tensor, x0: Tensor, masked: Tensor) -> Tensor:
    """Per-sequence sum over masked positions of -log p(x0_i | x_t) [B] (nats).

    Args:
        logits: [B, L, V] the network's logits over characters (no mask token: zero masking).
        x0: [B, L] clean tokens.
        masked: [B, L] bool, True where x_t is masked.
    """
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # [B, L]
    return (ce * masked).sum(dim=1)


def mdlm_elbo_at(
    net: TextTransformer,
    x0: Tensor,
    t: Tensor,
    schedule: MaskSchedule,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One-sample estimate of the negative ELBO of each sequence at the given times.

    Args:
        net: the bidirectional network.
        x0: [B, L] clean tokens.
        t: [B] times in (0, 1].
        schedule: alpha(t).
        generator: the source of the masks.
    Returns:
        [B] weighted masked cross-entropies, nats per sequence (their mean over t ~ U(0, 1]
        is the negative ELBO).
    """
    t = t.to(x0.device)
    x_t, masked = mask_tokens(x0, schedule.alpha(t), net.config.vocab_size, generator)
    logits = net(x_t, t)
    return schedule.elbo_weight(t) * masked_cross_entropy(logits, x0, masked)


def mdlm_elbo(
    net: TextTransformer,
    x0: Tensor,
    schedule: MaskSchedule,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The MDLM training loss: the negative ELBO in nats per token, averaged over the batch,
    with antithetic (stratified) times across the batch.

    Args:
        net: the bidirectional network.
        x0: [B, L] clean tokens.
        schedule: alpha(t).
        generator: the source of the times and masks.
    Returns:
        scalar loss (nats per token).
    """
    t = antithetic_times(x0.shape[0], generator)
    return mdlm_elbo_at(net, x0, t, schedule, generator).mean() / x0.shape[1]


def ar_nll(net: TextTransformer, x0: Tensor) -> Tensor:
    """Next-token negative log-likelihood per sequence [B] (nats), every character scored.

    The input is the sequence shifted right behind the begin token (the id the diffusion
    network uses as its mask), so the first character is predicted from no context, as the
    diffusion bound scores every character of the window too.

    Args:
        net: the causal network.
        x0: [B, L] tokens.
    Returns:
        [B] summed negative log-likelihood.
    """
    begin = torch.full_like(x0[:, :1], net.config.vocab_size)
    logits = net(torch.cat([begin, x0[:, :-1]], dim=1))  # [B, L, V]
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
    return ce.sum(dim=1)
