"""What a probe is handed, checked before any evaluation: the model, the data splits, the checkpoints.

Each error is one `InputError` naming the split or checkpoint, the tensor and what was expected, so
nothing reaches torch that would fail there with numbers of its own (or, worse, not fail: a NaN in a
checkpoint gives NaN losses beside plausible-looking errors).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn


class InputError(ValueError):
    """A model, split or checkpoint that cannot be probed as given."""


def validate(
    model: nn.Module,
    checkpoints: Mapping,
    splits: Mapping,
    num_classes: int | None = None,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    allow_nonfinite: bool = False,
) -> int:
    """Check everything and return the number of classes (the model's outputs; `num_classes`, when
    given, must equal them). `transform` turns a split's inputs into the model's (uint8 images are
    standardized by it); `allow_nonfinite` turns non-finite values into a warning instead of an error."""
    check_model(model)
    check_checkpoints(model, checkpoints, allow_nonfinite)
    check_splits(splits, allow_nonfinite)
    classes = check_forward(model, splits, transform)
    if num_classes is not None and classes != num_classes:
        raise InputError(f"model: gives {classes} outputs per example, but the data has {num_classes} classes")
    check_labels(splits, classes)
    return classes


def check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"model: expected a torch.nn.Module (or a factory returning one), got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise InputError(f"model: {type(model).__name__} has no parameters, so it has no unit to reset")


def check_checkpoints(model: nn.Module, checkpoints: Mapping, allow_nonfinite: bool = False) -> None:
    """Epoch 0 and a final epoch, each a state dict with exactly the model's entries, shapes and dtypes."""
    if not isinstance(checkpoints, Mapping) or not checkpoints:
        raise InputError("checkpoints: expected a non-empty mapping {epoch: state dict}, epoch 0 among them")
    bad = [e for e in checkpoints if isinstance(e, bool) or not isinstance(e, int) or e < 0]
    if bad:
        raise InputError(f"checkpoints: epochs must be integers ≥ 0, got {bad}")
    if 0 not in checkpoints:
        raise InputError(f"checkpoints: epoch 0 (the initialization) is required; epochs given: {sorted(checkpoints)}")
    expected = model.state_dict()
    for epoch in sorted(checkpoints):
        state, where = checkpoints[epoch], f"checkpoint {epoch}"
        if not isinstance(state, Mapping):
            raise InputError(f"{where}: expected a state dict (name → tensor), got {type(state).__name__}")
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            parts = [
                f"{what} {_names(keys)}"
                for what, keys in (("missing", missing), ("not in the model", unexpected))
                if keys
            ]
            raise InputError(f"{where}: entries do not match {type(model).__name__}'s state dict: {'; '.join(parts)}")
        for name, want in expected.items():
            got = state[name]
            if not isinstance(got, torch.Tensor):
                raise InputError(f"{where}: {name} is a {type(got).__name__}, not a tensor")
            if got.shape != want.shape:
                raise InputError(f"{where}: {name} has shape {tuple(got.shape)}, the model's is {tuple(want.shape)}")
            if got.dtype != want.dtype:
                raise InputError(f"{where}: {name} is {got.dtype}, the model's is {want.dtype}")
            if got.is_floating_point():
                _finite(got, f"{where}: tensor {name}", allow_nonfinite)


def check_splits(splits: Mapping, allow_nonfinite: bool = False) -> None:
    """Each split a pair (inputs, labels) of equal, non-zero length; integer labels, one per input (N,)
    or one per position (N, T, ...)."""
    if not isinstance(splits, Mapping) or not splits:
        raise InputError("data: no splits given; expected {split name: (inputs, labels)} or one (inputs, labels) pair")
    shape = None
    for split, pair in splits.items():
        where = f"data split {split!r}"
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise InputError(f"{where}: expected a pair (inputs, labels), got {type(pair).__name__}")
        x, y = pair
        for name, value in (("inputs", x), ("labels", y)):
            if not isinstance(value, torch.Tensor):
                raise InputError(f"{where}: {name} are a {type(value).__name__}, not a tensor")
        if len(x) == 0:
            raise InputError(f"{where}: it is empty (0 examples)")
        if y.dim() == 0 or len(y) != len(x):
            raise InputError(
                f"{where}: {len(x)} inputs but labels of shape {tuple(y.shape)}; expected one label per input, "
                f"shape ({len(x)},), or one per position of each input (a sequence model's next tokens)"
            )
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise InputError(f"{where}: labels are {y.dtype}; expected class indices of an integer dtype (torch.long)")
        if shape is not None and x.shape[1:] != shape[1]:
            raise InputError(
                f"{where}: inputs of shape {tuple(x.shape[1:])} per example, but split {shape[0]!r} has "
                f"{tuple(shape[1])}"
            )
        shape = shape or (split, x.shape[1:])
        if x.is_floating_point():
            _finite(x, f"{where}: inputs", allow_nonfinite)


def check_forward(model: nn.Module, splits: Mapping, transform: Callable | None = None) -> int:
    """One example of each split through the model: it must take them and give (1, classes) logits,
    or (1, T, ..., classes) for labels per position (T, ...)."""
    prepare = transform or (lambda x: x)
    was_training = model.training
    model.eval()
    classes = None
    try:
        for split, (x, y) in splits.items():
            try:
                with torch.no_grad():
                    out = model(prepare(x[:1]))
            except Exception as err:  # any failure here means the same: these inputs do not fit this model
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise InputError(
                    f"data split {split!r}: the model does not take inputs of shape {tuple(x.shape[1:])} per example "
                    f"({type(err).__name__}: {first})"
                ) from err
            positions = tuple(y.shape[1:])
            if not isinstance(out, torch.Tensor) or tuple(out.shape[:-1]) != (1, *positions) or out.dim() < 2:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                want = ", ".join(["1", *map(str, positions), "classes"])
                raise InputError(
                    f"model: on data split {split!r} it returns {got} for one example; "
                    f"expected logits of shape ({want})"
                )
            classes = out.shape[-1]
    finally:
        model.train(was_training)
    return classes


def check_labels(splits: Mapping, classes: int) -> None:
    for split, (_, y) in splits.items():
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            outside = int(((y < 0) | (y >= classes)).sum())
            raise InputError(
                f"data split {split!r}: labels span {low}..{high}, {outside} of them outside 0..{classes - 1} "
                f"(the model gives {classes} outputs)"
            )


def _finite(tensor: torch.Tensor, what: str, allow: bool) -> None:
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        text = f"{what} holds {bad} non-finite value(s) (NaN or ±inf) of {tensor.numel()}"
        if not allow:
            raise InputError(f"{text}; pass allow_nonfinite=True to probe it anyway")
        warnings.warn(text, stacklevel=3)


def _names(keys: list[str], shown: int = 5) -> str:
    listed = ", ".join(keys[:shown])
    return f"[{listed}{f', … {len(keys) - shown} more' if len(keys) > shown else ''}]"
