"""Receptive fields: which input pixels each unit of a layer depends on, exactly.

:func:`receptive_field` lists, by running the model once on a blank image, the
convolutions and pools that run before a layer's output, each with its kernel,
stride, dilation and padding (including TensorFlow SAME padding, which depends on
the input size), and composes them into a :class:`ReceptiveField`, whose ``box``
maps a unit to its input box.

``receptive_field`` is a graded exercise: this module imports only the foundation
modules, so the autograder can import it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .hooks import evaluating, get_layer
from .models import Conv2dSame
from .runtime import model_device
from .validation import int_pair, model_dtype, non_negative_int

__all__ = ["ReceptiveField", "receptive_field", "spatial_ops_before"]

_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
              nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Dropout, nn.Dropout2d, nn.Identity,
              nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)


def _padding(value) -> tuple[int, int]:
    """A layer's padding (an int or a (rows, columns) pair, either may be 0) as a pair of ints."""
    if isinstance(value, (tuple, list)):
        rows, cols = value
        return non_negative_int(rows, "padding"), non_negative_int(cols, "padding")
    value = non_negative_int(value, "padding")
    return value, value


def _kernel_stride_dilation(module: nn.Module):
    """A convolution's or pool's kernel size, stride (the kernel size for a pool without one) and
    dilation (1 for a pool without one), each as a (rows, columns) pair."""
    stride = module.stride if module.stride is not None else module.kernel_size
    return (int_pair(module.kernel_size, "kernel_size"), int_pair(stride, "stride"),
            int_pair(getattr(module, "dilation", 1), "dilation"))


def _spatial_op(module: nn.Module, in_size: tuple[int, int]):
    """(kernel, stride, dilation, padding before) per dimension, or None for pointwise modules."""
    if isinstance(module, Conv2dSame):
        pad = tuple(module.same_padding(in_size[d], d)[0] for d in range(2))
        return (*_kernel_stride_dilation(module), pad)
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride, dilation = _kernel_stride_dilation(module)
        if module.padding == "valid":
            pad = (0, 0)
        elif module.padding == "same":  # PyTorch's "same" (stride 1): the smaller half goes first
            pad = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
        else:
            pad = _padding(module.padding)
        return kernel, stride, dilation, pad
    if isinstance(module, _POINTWISE):
        return None
    return "unknown"


@dataclass(frozen=True)
class ReceptiveField:
    """Where each unit of a layer looks in the input, per dimension (rows, columns).

    The unit at output position ``(r, c)`` depends exactly on input rows
    ``offset[0] + r * stride[0]`` .. ``+ size[0] - 1`` (and likewise columns);
    ``offset`` is negative where padding reaches outside the image.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]
    input_size: tuple[int, int]
    output_size: tuple[int, int]

    def box(self, row: int, col: int, *, clip: bool = True) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` input box of the unit at ``(row, col)``; bottom/right exclusive.

        With ``clip`` (default) the box is cut to the image.
        """
        for value, limit, name in ((row, self.output_size[0], "row"), (col, self.output_size[1], "col")):
            if not 0 <= int(value) < limit:
                raise IndexError(f"{name} {value} is outside the layer's output of size {self.output_size}")
        top = self.offset[0] + int(row) * self.stride[0]
        left = self.offset[1] + int(col) * self.stride[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if clip:
            top, left = max(top, 0), max(left, 0)
            bottom, right = min(bottom, self.input_size[0]), min(right, self.input_size[1])
        return top, left, bottom, right


def spatial_ops_before(model: nn.Module, layer: str, input_size: tuple[int, int]):
    """The spatial operations (kernel, stride, dilation, pad before) that run before ``layer``'s
    output, in order, found by running the model once on a blank image of ``input_size``."""
    target = get_layer(model, layer)
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    ops: list = []
    sizes: dict = {}

    class _Stop(Exception):
        pass

    def record(name, module):
        def hook(mod, inputs, output):
            x = inputs[0] if inputs else None
            if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor) or x.dim() != 4:
                return
            if output.dim() != 4:
                raise ValueError(f"layer {name!r} ({type(mod).__name__}) runs before {layer!r} and does not "
                                 "output a spatial map; pick a convolutional layer")
            in_size, out_size = tuple(x.shape[-2:]), tuple(output.shape[-2:])
            op = _spatial_op(mod, in_size)
            if op == "unknown":
                has_kernel = any(p.dim() == 4 for p in mod.parameters(recurse=False))
                if in_size != out_size or has_kernel:
                    raise ValueError(
                        f"layer {name!r} ({type(mod).__name__}) runs before {layer!r} and its receptive "
                        f"field is not known here (input {in_size}, output {out_size}); supported: Conv2d, "
                        "Conv2dSame, MaxPool2d, AvgPool2d and layers that work pixel by pixel; a global "
                        "pool sees the whole image")
                op = None  # keeps the size and has no kernel: works pixel by pixel
            if op is not None:
                ops.append(op)
        return hook

    def stop(mod, inputs, output):
        is_map = isinstance(output, torch.Tensor) and output.dim() == 4
        sizes["target"] = tuple(output.shape[-2:]) if is_map else None
        raise _Stop

    device, dtype = model_device(model), model_dtype(model)
    in_channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    handles = []
    try:
        for name, module in leaves:
            handles.append(module.register_forward_hook(record(name, module)))
        handles.append(target.register_forward_hook(stop))
        with torch.no_grad(), evaluating(model):
            try:
                model(torch.full((1, in_channels, *input_size), 0.5, device=device, dtype=dtype))
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    if "target" not in sizes:
        raise RuntimeError(f"layer {layer!r} did not run in the forward pass")
    if sizes["target"] is None:
        raise ValueError(f"layer {layer!r} does not output a spatial map (N, C, H, W); "
                         "pick a convolutional layer")
    return ops, sizes["target"]


def receptive_field(model: nn.Module, layer: str, input_size) -> ReceptiveField:
    """The exact receptive field of ``layer``'s units for inputs of ``input_size`` (H, W) or an int.

    Runs the model once on a blank image to list, in order, the convolutions and
    pools that run before ``layer``'s output, with each one's kernel, stride,
    dilation and padding (TensorFlow SAME padding of :class:`~cs_utils.models.Conv2dSame`
    depends on the size of its input, and puts the odd pixel after). Composing
    them: with ``j`` the distance in input pixels between neighbouring units
    (the product of strides so far), a layer with kernel ``k``, dilation ``d``,
    stride ``s`` and padding ``p`` before gives

        size += (k - 1) * d * j;   offset -= p * j;   j *= s.

    Residual connections that add the block's input (identity skips) do not
    widen the field, so a chain of layers is enough for VGG-like networks and
    EfficientNet. Returns a :class:`ReceptiveField`; ``.box(row, col)`` maps a
    unit to its input box, clipped to the image.
    """
    input_size = int_pair(input_size, "input_size")
    ops, output_size = spatial_ops_before(model, layer, input_size)
    ### BEGIN SOLUTION
    size, stride, offset = [1, 1], [1, 1], [0, 0]
    for kernel, step, dilation, pad in ops:
        for d in range(2):
            size[d] += (kernel[d] - 1) * dilation[d] * stride[d]
            offset[d] -= pad[d] * stride[d]
            stride[d] *= step[d]
    return ReceptiveField(tuple(size), tuple(stride), tuple(offset), input_size, tuple(output_size))
    ### END SOLUTION
