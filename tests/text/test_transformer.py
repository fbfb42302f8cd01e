"""The text Transformer: one class for both objectives, causal masking, the KV cache."""

import pytest
import torch

from diffuse.config import load_recipe
from diffuse.text.transformer import KVCache, TextNetConfig, TextTransformer
from diffuse.training.text_loop import text_network_config


def tiny(**kw) -> TextTransformer:
    torch.manual_seed(0)
    return TextTransformer(TextNetConfig(vocab_size=7, width=16, depth=2, heads=2, **kw)).eval()


def test_ar_and_mdlm_recipes_build_one_class_with_equal_parameters():
    """The shipped recipes differ in the objective only: the same class, the same parameter
    count, causal the only config difference."""
    nets = {}
    for objective in ("mdlm", "ar"):
        cfg = load_recipe(f"configs/shakespeare-{objective}.toml")
        nets[objective] = TextTransformer(text_network_config(cfg, 65))
    mdlm, ar = nets["mdlm"], nets["ar"]
    assert type(mdlm) is type(ar) is TextTransformer
    assert sum(p.numel() for p in mdlm.parameters()) == sum(p.numel() for p in ar.parameters())
    assert [(k, v.shape) for k, v in mdlm.state_dict().items()] == [
        (k, v.shape) for k, v in ar.state_dict().items()
    ]
    diff = {k for k, v in vars(mdlm.config).items() if getattr(ar.config, k) != v}
    assert diff == {"causal"}


def test_causal_network_does_not_look_ahead_and_the_bidirectional_one_does():
    x = torch.randint(0, 8, (1, 10), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 6] = (y[0, 6] + 1) % 8
    with torch.no_grad():
        ar, mdlm = tiny(causal=True), tiny(causal=False)
        assert torch.equal(ar(x)[:, :6], ar(y)[:, :6])
        assert not torch.allclose(mdlm(x)[:, :6], mdlm(y)[:, :6])


def test_kv_cache_matches_the_full_forward():
    net = tiny(causal=True)
    x = torch.randint(0, 8, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(x)
        cache = KVCache()
        parts = [net(x[:, :4], cache=cache)] + [
            net(x[:, i : i + 1], cache=cache) for i in range(4, 9)
        ]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        tiny()(x, cache=KVCache())


def test_time_conditioning_starts_as_identity_and_needs_t():
    net = tiny(time_conditioning=True)
    x = torch.randint(0, 8, (2, 5))
    with pytest.raises(ValueError, match="pass t"):
        net(x)
    with torch.no_grad():  # adaLN-Zero: every gate is 0, so t cannot matter yet
        assert torch.equal(net(x, torch.tensor([0.1, 0.2])), net(x, torch.tensor([0.9, 0.5])))
    with pytest.raises(ValueError, match="time_conditioning"):
        TextNetConfig(causal=True, time_conditioning=True)


@pytest.mark.parametrize(
    "kw, name", [({"heads": 3}, "heads"), ({"width": 0}, "width"), ({"depth": 0}, "depth")]
)
def test_bad_configs_name_the_field(kw, name):
    with pytest.raises(ValueError, match=name):
        TextNetConfig(**{"width": 16, "heads": 2, **kw})
