"""folded_copy: batch norm folded into the convolution before it, the same function, the caller's
model untouched (cs_utils.engine.folding)."""

import torch
from torch import nn

import cs_utils
from cs_utils.engine.folding import folded_copy
from cs_utils.hooks import extract_features
from cs_utils.models import CONTENT_LAYER, STYLE_LAYERS


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def conv_bn_net():
    """stem: conv -> bn -> relu6, then a block with a biased conv -> bn, then a head."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("stem", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                         nn.ReLU6()))
    net.add_module("block", nn.Sequential(nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5)))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(5, 3))
    for bn in (net.stem[1], net.block[1]):     # statistics far from 0 and 1, as after training
        c = bn.num_features
        bn.running_mean.copy_(torch.linspace(-1, 2, c))
        bn.running_var.copy_(torch.linspace(0.5, 3, c))
        bn.weight.data.copy_(torch.linspace(0.5, 1.5, c))
        bn.bias.data.copy_(torch.linspace(-0.3, 0.4, c))
    return net.train()   # the caller's mode: the copy must still use the running statistics


def test_folded_weights_are_the_hand_computed_affine_map():
    net = conv_bn_net()
    folded = folded_copy(net)
    conv, bn = net.stem[0], net.stem[1]
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.stem[0].weight, conv.weight.detach() * scale.view(-1, 1, 1, 1))
    torch.testing.assert_close(folded.stem[0].bias, bn.bias.detach() - bn.running_mean * scale)
    conv, bn = net.block[0], net.block[1]
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.block[0].bias,
                               (conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach())
    assert isinstance(folded.stem[1], nn.Identity) and isinstance(folded.block[1], nn.Identity)
    assert not any(m.training for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())


def test_folded_copy_computes_the_same_outputs_and_gradients_and_leaves_the_model(caller_state):
    net = conv_bn_net()
    before, weights = caller_state(net), {k: v.clone() for k, v in net.state_dict().items()}
    folded = folded_copy(net)
    assert folded is not net
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())
    assert isinstance(net.stem[1], nn.BatchNorm2d) and net.training
    x = torch.rand(2, 3, 9, 9, generator=seeded(0), requires_grad=True)
    net.eval()
    want = extract_features(net, x, ["stem", "stem.1", "block"])
    got = extract_features(folded, x, ["stem", "stem.1", "block"])
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-6)
    (gw,) = torch.autograd.grad(net(x).pow(2).sum(), x)
    (gf,) = torch.autograd.grad(folded(x).pow(2).sum(), x)
    torch.testing.assert_close(gf, gw, rtol=1e-5, atol=1e-6)
    net.train()
    before.assert_unchanged()


def test_a_kept_convolution_is_not_folded():
    net = conv_bn_net().eval()
    folded = folded_copy(net, keep=["stem.0"])
    assert isinstance(folded.stem[1], nn.BatchNorm2d)             # stem.0's output stays the conv's
    assert isinstance(folded.block[1], nn.Identity)
    x = torch.rand(1, 3, 8, 8, generator=seeded(1))
    torch.testing.assert_close(extract_features(folded, x, ["stem.0"])["stem.0"],
                               extract_features(net, x, ["stem.0"])["stem.0"])


def test_models_with_hooks_or_nothing_to_fold_are_returned_as_they_are(tiny_cnn):
    assert folded_copy(tiny_cnn) is tiny_cnn                      # no batch norm
    net = conv_bn_net()
    handle = net.fc.register_forward_hook(lambda *args: None)
    assert folded_copy(net) is net                                # a copy would call a copy of the hook
    handle.remove()

    class Unrolled(nn.Module):                                    # conv and bn outside a Sequential
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    unrolled = Unrolled()
    assert folded_copy(unrolled) is unrolled


def test_layout_follows_the_modules_origin():
    class Custom(nn.Module):          # a module whose code might .view() its input
        def forward(self, x):
            return x.reshape(x.shape[0], -1)

    net = conv_bn_net()
    assert folded_copy(net).stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    net.flat = Custom()
    folded = folded_copy(net)
    assert isinstance(folded.stem[1], nn.Identity)
    assert folded.stem[0].weight.is_contiguous()


def test_lite0_folded_features_and_input_gradient_match(lite0, caller_state):
    before = caller_state(lite0)
    folded = folded_copy(lite0, keep=STYLE_LAYERS)
    names = list(dict.fromkeys(STYLE_LAYERS + (CONTENT_LAYER,)))
    x = torch.rand(1, 3, 64, 64, generator=seeded(2), requires_grad=True)
    want, got = extract_features(lite0, x, names), extract_features(folded, x, names)
    for name in names:
        scale = want[name].detach().abs().max()
        assert float((got[name] - want[name]).detach().abs().max() / scale) < 1e-4, name
    (gw,) = torch.autograd.grad(sum(f.pow(2).mean() for f in want.values()), x)
    (gf,) = torch.autograd.grad(sum(f.pow(2).mean() for f in got.values()), x)
    assert float((gf - gw).abs().max() / gw.abs().max()) < 1e-4
    before.assert_unchanged()


def test_style_transfer_runs_on_a_copy_and_leaves_the_model(lite0, caller_state, hook_count):
    before = caller_state(lite0)
    content = cs_utils.load_image("chelsea", 32)
    style = cs_utils.load_style("starry_night", 32)
    image, history = cs_utils.style_transfer(lite0, content, style, steps=4, progress=False)
    assert history.steps == 4 and torch.isfinite(image).all()
    before.assert_unchanged()
    assert hook_count(lite0) == 0


def test_gradient_network_is_made_once_and_remade_when_the_weights_change():
    import gc
    import weakref

    from cs_utils.engine.folding import _NETWORKS, gradient_network

    net = conv_bn_net().eval()
    first = gradient_network(net)
    assert first is not net and gradient_network(net) is first          # cached
    assert gradient_network(net, keep=["stem.0"]) is not first          # another keep, another copy
    assert gradient_network(net, keep=["block", "stem.1", "fc"]) is first   # none of them a folded conv
    x = torch.rand(1, 3, 8, 8, generator=seeded(6))
    with torch.no_grad():
        net.block[0].weight.mul_(2.0)                                    # an in-place change
    second = gradient_network(net)
    assert second is not first
    torch.testing.assert_close(second(x), net(x), rtol=1e-5, atol=1e-6)
    handle = net.fc.register_forward_hook(lambda *args: None)
    assert gradient_network(net) is net                                 # hooked: the model itself
    handle.remove()
    ref, cached = weakref.ref(net), len(_NETWORKS)
    del net, first, second
    gc.collect()
    assert ref() is None and len(_NETWORKS) == cached - 1      # the cache keeps no model alive


def test_saliency_and_integrated_gradients_on_the_folded_network_match_the_model(lite0):
    photos = [s for s in cs_utils.sample_images("photo") if s.name.startswith("imagenet")][:2]
    x = torch.cat([cs_utils.load_image(s.path, 96) for s in photos])
    target = [0, 1]
    folded = cs_utils.saliency_map(lite0, x, target)
    handle = lite0.fc.register_forward_hook(lambda *args: None)        # a hooked model is not copied
    try:
        plain = cs_utils.saliency_map(lite0, x, target)
        plain_ig = cs_utils.integrated_gradients(lite0, x, target, steps=4).maps
    finally:
        handle.remove()
    folded_ig = cs_utils.integrated_gradients(lite0, x, target, steps=4).maps
    # float32 rounding flips a few ReLU6 gates, so single pixels differ; on the mean the maps agree
    assert float((folded - plain).abs().mean() / plain.abs().mean()) < 1e-3
    assert float((folded_ig - plain_ig).abs().mean() / plain_ig.abs().mean()) < 1e-3


def test_class_visualization_on_the_folded_network_gives_the_image_of_the_model_as_it_is(caller_state,
                                                                                         monkeypatch):
    from models_by_hand import batch_norm_cnn, unfolded

    from cs_utils import class_viz
    from cs_utils.engine.folding import gradient_network

    used = []

    def recorded(net, keep):
        used.append((gradient_network(net, keep=keep), keep))
        return used[-1][0]

    monkeypatch.setattr(class_viz, "gradient_network", recorded)
    model = batch_norm_cnn()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gradient_network(model, keep=["block1.0"]).block2)
    o = cs_utils.objectives
    objective = (o.class_score(model, 2) + 0.5 * o.channel(model, "block1.0", 1)
                 - 0.1 * o.diversity(model, "block2"))
    runs = {recipe: (lambda recipe=recipe: cs_utils.class_visualization(
        model, objective, recipe=recipe, steps=6, image_size=32, batch=2, generator=seeded(5),
        progress=False)[0]) for recipe in ("natural", "cs231n")}
    state = caller_state(model)
    for recipe, run in runs.items():
        folded = run()
        state.assert_unchanged()
        net, keep = used[-1]                # one folded network, keeping the convolution read
        assert net is not model and set(keep) == {"", "block1.0", "block2"}
        with unfolded(model):
            plain = run()
        state.assert_unchanged()
        assert used[-1][0] is model         # hooked: run as it is
        # the same function up to float rounding, carried through 6 Adam / SGD steps
        assert (folded - plain).abs().max() < 1e-4, recipe
        assert (plain - plain.mean()).abs().max() > 1e-3, recipe


def test_class_visualization_leaves_the_model_as_it_was_when_the_folded_network_raises(caller_state):
    import pytest
    from models_by_hand import batch_norm_cnn

    model = batch_norm_cnn(fails_on_call=3)
    state = caller_state(model)
    with pytest.raises(RuntimeError, match="middle of the optimisation"):
        cs_utils.class_visualization(model, 1, steps=5, image_size=32, progress=False)
    state.assert_unchanged()
    assert not model.block1[0].bias.requires_grad and model.training
