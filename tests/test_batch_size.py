"""Batch sizes by measurement (cs_utils.engine.batch_size): the fastest per item, measured once per
network and kept with it."""

import gc
import time
import weakref

import pytest
import torch
from torch import nn

from cs_utils.engine import batch_size as B
from cs_utils.engine.batch_size import fastest_batch_size, measured_batch_size


def test_fastest_batch_size_picks_the_least_time_per_item():
    seconds_per_item = {1: 0.004, 2: 0.003, 4: 0.001, 8: 0.002, 16: 0.0005}   # 16, then 4 is fastest
    calls, now = [], [0.0]

    def run(batch_size):   # advances a simulated clock: the choice cannot depend on the machine's load
        calls.append(batch_size)
        now[0] += batch_size * seconds_per_item[batch_size]

    def clock():
        return now[0]

    assert fastest_batch_size(run, [8, 4, 2, 1], clock=clock) == 4
    assert calls == [1, 1, 1, 2, 2, 4, 4, 8, 8]     # one warm-up, then two timed calls per size
    assert fastest_batch_size(run, [1, 2], repeats=1, clock=clock) == 2
    calls.clear()
    assert fastest_batch_size(run, [1, 2, 4, 8, 16], clock=clock) == 4   # 8 is 2x slower than 4
    assert 16 not in calls
    assert fastest_batch_size(run, [1, 2, 4, 8, 16], repeats=1, stop_when_slower=None,
                              clock=clock) == 16
    # The real clock still measures: a run that sleeps longer per item loses.
    assert fastest_batch_size(lambda b: time.sleep(0.2 if b == 1 else 0.0), [1, 2]) == 2


def test_fastest_batch_size_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        fastest_batch_size(lambda b: None, [0, 1])
    with pytest.raises(ValueError, match="positive"):
        fastest_batch_size(lambda b: None, [])
    with pytest.raises(ValueError, match="repeats"):
        fastest_batch_size(lambda b: None, [1], repeats=0)


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.graphs = net, 0, 0

    def forward(self, x):
        self.calls += 1
        self.graphs += torch.is_grad_enabled() and x.requires_grad
        return self.net(x)


def test_measured_once_per_network_and_kind_of_pass_and_kept_with_the_network(tiny_cnn):
    model = Counting(tiny_cnn).train()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    chosen = measured_batch_size(model, x, [1, 2, 4])
    measured = model.calls
    assert chosen in (1, 2, 4) and measured >= 3 and model.graphs == 0     # forward passes without a graph
    assert model.training                                                  # measured in eval mode, restored
    assert measured_batch_size(model, x, [4, 2, 1]) == chosen and model.calls == measured   # kept
    assert measured_batch_size(model, x, [1, 2, 4], gradient=True) in (1, 2, 4)
    assert model.graphs == model.calls - measured                         # forward and backward passes
    again = model.calls
    measured_batch_size(model, x.double().float()[:, :, :4], [1, 2])       # another shape: measured
    assert model.calls > again
    ref, kept = weakref.ref(model), len(B._measured)
    del model
    gc.collect()
    assert ref() is None and len(B._measured) == kept - 1                 # the entry went with the network


def test_a_copy_with_other_weights_finds_the_measurement_and_another_architecture_does_not(tiny_cnn):
    import copy

    model = Counting(copy.deepcopy(tiny_cnn))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    chosen = measured_batch_size(model, x, [1, 2, 4, 8], gradient=True)
    assert model.calls >= 4
    other_weights = copy.deepcopy(model)
    other_weights.calls = 0
    with torch.no_grad():
        for p in other_weights.parameters():
            p.normal_()                            # a randomized copy, as a sanity check makes
    assert measured_batch_size(other_weights, x, [1, 2, 4, 8], gradient=True) == chosen
    assert other_weights.calls == 0                # not measured again
    assert measured_batch_size(other_weights, x, [1, 2, 4, 8]) in (1, 2, 4, 8) and other_weights.calls > 0
    wider = Counting(copy.deepcopy(tiny_cnn))      # another architecture: 6 channels, not 4
    wider.net.conv = nn.Conv2d(3, 6, 3, padding=1)
    wider.net.fc = nn.Linear(6, 5)
    measured_batch_size(wider, x, [1, 2, 4, 8], gradient=True)
    assert wider.calls > 0
    stride = Counting(copy.deepcopy(tiny_cnn))     # the same shapes, another stride
    stride.net.conv.stride = (2, 2)
    measured_batch_size(stride, x, [1, 2, 4, 8], gradient=True)
    assert stride.calls > 0
