"""Sampling runs its network in eval mode, and switches modes only when something trains (a
loaded model is in eval mode, so a server's requests never walk the network to switch)."""

from __future__ import annotations

from torch import nn

from diffuse.pipelines.sample import eval_mode


class _Counting(nn.Sequential):
    switches = 0

    def train(self, mode: bool = True) -> nn.Module:
        _Counting.switches += 1
        return super().train(mode)


def test_a_module_in_eval_mode_is_left_alone():
    net = _Counting(nn.Linear(2, 2), nn.Dropout(0.5)).eval()
    _Counting.switches = 0
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert _Counting.switches == 0 and not any(m.training for m in net.modules())


def test_a_training_module_is_evaluated_then_restored():
    net = _Counting(nn.Linear(2, 2), nn.Dropout(0.5))  # training, as built
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert all(m.training for m in net.modules())
    net.eval()
    net[1].train()  # only a part trains: evaluated, then everything as the top (eval)
    with eval_mode(net):
        assert not net[1].training
    assert not any(m.training for m in net.modules())
