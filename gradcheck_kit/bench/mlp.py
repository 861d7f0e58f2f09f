"""The whole MLP as one op: exercise 1's chunked backward, exercises 2-4 fused, and loss.backward()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from gradcheck_kit.bench import variants as v
from gradcheck_kit.bench.impl import Implementation
from gradcheck_kit.bench.mlp_chain import fused_backward
from gradcheck_kit.bench.spec import INDEX_BYTES, Inputs, Op, Params, Thunk, Variant, autograd_call
from gradcheck_kit.makemore.model import GRADED, PARAMETERS, Config, build

__all__ = ["MLP", "mlp_min_bytes"]

#: The notebook's context length and embedding width; the sizes vary the batch, hidden layer and vocabulary.
MLP_BLOCK = 3
MLP_EMBD = 10


def mlp_min_bytes(n: int, h: int, v: int, itemsize: int) -> int:
    """Read what the parameters' gradients depend on, write each gradient once.

    Reads logits (n, v), h and bnraw (n, h), embcat (n, block*embd), W2, W1,
    bngain, bnvar_inv and the indices; writes dC, dW1, db1, dW2, db2, dbngain, dbnbias.
    """
    fan_in = MLP_BLOCK * MLP_EMBD
    reads = n * v + 2 * n * h + n * fan_in + h * v + fan_in * h + 2 * h
    writes = v * MLP_EMBD + fan_in * h + h + h * v + v + 2 * h
    return (reads + writes) * itemsize + n * (MLP_BLOCK + 1) * INDEX_BYTES


def _mlp_inputs(p: Params, device: torch.device, dtype: torch.dtype, seed: int, expected: bool) -> Inputs:
    config = Config(
        n=p["n"], block_size=MLP_BLOCK, n_embd=MLP_EMBD, n_hidden=p["h"], vocab_size=p["v"], seed=seed,
        dtype=str(dtype).removeprefix("torch."), device=str(device),
    )  # fmt: skip
    fwd = build(config)
    return Inputs(fwd.student_view(), dict(fwd.reference_grads) if expected else None)


def _mlp_autograd(inputs: Inputs) -> Thunk:
    f = inputs.f
    p = {name: getattr(f, name).detach().clone().requires_grad_() for name in PARAMETERS}
    # Exercise 4's forward pass, whose loss.backward() the fused variant replaces.
    embcat = p["C"][f.Xb].view(f.Xb.shape[0], -1)
    hprebn = embcat @ p["W1"] + p["b1"]
    bnvar_inv = (hprebn.var(0, keepdim=True, unbiased=True) + 1e-5) ** -0.5
    hpreact = p["bngain"] * (hprebn - hprebn.mean(0, keepdim=True)) * bnvar_inv + p["bnbias"]
    logits = torch.tanh(hpreact) @ p["W2"] + p["b2"]
    grads = autograd_call(F.cross_entropy(logits, f.Yb), list(p.values()))
    return lambda: dict(zip(p, grads(), strict=True))


def _mlp_chunked(f: Any) -> dict[str, torch.Tensor]:
    return v.mlp_backward(
        f, v.cross_entropy_chunked, v.batchnorm_chunked, lambda f, demb: v.embedding_loop(demb, f.Xb, f.C.shape[0])
    )


def fused_pass(
    f: Any,
    cross_entropy: Callable[..., torch.Tensor] = v.cross_entropy_fused,
    batchnorm: Callable[..., torch.Tensor] = v.batchnorm_fused,
    embedding: Callable[..., torch.Tensor] = v.embedding_index_add,
) -> dict[str, torch.Tensor]:
    return fused_backward(f, cross_entropy, batchnorm, embedding)


def _mlp_impl(impl: Implementation, device: torch.device) -> tuple[Variant, ...]:
    found: list[Variant] = []
    if impl.has("ex1_chunked_backward.py"):
        chunked = impl.function("ex1_chunked_backward.py", "chunked_backward")
        found.append(
            Variant(
                "impl-chunked", f"{impl.label} chunked (ex 1)", lambda i: lambda: chunked(i.f),
                source=impl.label, checked=GRADED, student=True,
            )
        )  # fmt: skip
    files = ("ex2_cross_entropy.py", "ex3_batchnorm.py", "ex4_embedding.py")
    if all(impl.has(name) for name in files):
        ce = impl.function(files[0], "cross_entropy_backward")
        bn = impl.function(files[1], "batchnorm_backward")
        emb = impl.function(files[2], "embedding_backward")
        found.append(
            Variant(
                "impl-fused", f"{impl.label} fused (ex 2-4)", lambda i: lambda: fused_pass(i.f, ce, bn, emb),
                source=impl.label, checked=PARAMETERS, student=True,
            )
        )  # fmt: skip
    return tuple(found)


MLP = Op(
    name="mlp",
    title="whole MLP backward",
    output="",
    axes=("n",),
    baseline="chunked",
    min_bytes=mlp_min_bytes,
    make_inputs=_mlp_inputs,
    variants=(
        Variant("chunked", "chunked (ex 1)", lambda i: lambda: _mlp_chunked(i.f), checked=PARAMETERS),
        Variant("fused", "fused (ex 2-4)", lambda i: lambda: fused_pass(i.f), checked=PARAMETERS),
        Variant("autograd", "loss.backward()", _mlp_autograd, checked=PARAMETERS),
    ),
    impl_variants=_mlp_impl,
    describe=lambda p: f"n={p['n']} hidden={p['h']} vocab={p['v']}",
)
