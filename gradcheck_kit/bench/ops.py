"""The backward passes the benchmark times: inputs, variants, and the least memory traffic of each.

Every op defines, next to its inputs, the minimum bytes any implementation must
move (read what the gradient depends on, write the gradient once). Dividing
that by a measured time gives an effective bandwidth that can be set against
the copy bandwidth of the same device. The whole MLP is in :mod:`gradcheck_kit.bench.mlp`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from gradcheck_kit.bench import variants as v
from gradcheck_kit.bench.impl import Implementation, triton_available
from gradcheck_kit.bench.mlp import MLP
from gradcheck_kit.bench.spec import INDEX_BYTES, Inputs, Op, Params, Thunk, Variant, autograd_call, generator

__all__ = [
    "BATCHNORM",
    "CROSS_ENTROPY",
    "EMBEDDING",
    "MLP",
    "OPS",
    "batchnorm_min_bytes",
    "cross_entropy_min_bytes",
    "embedding_min_bytes",
    "get_op",
]

#: Beyond this many rows the Python loop over the embedding takes about a second a call.
LOOP_ROWS = 8192


def _triton_variants(
    impl: Implementation, device: torch.device, name: str, call: Callable[..., Thunk]
) -> tuple[Variant, ...]:
    """The implementation's Triton kernel for this op: on CUDA only, and said to be unavailable without Triton."""
    if device.type != "cuda" or not impl.has("ex7_triton_kernels.py"):
        return ()
    fn = impl.function("ex7_triton_kernels.py", name)
    return (
        Variant(
            key="impl-triton",
            label=f"{impl.label} Triton (ex 7)",
            prepare=lambda inputs: call(fn, inputs.f),
            source=impl.label,
            student=True,
            unavailable=None if triton_available() else "triton is not installed",
        ),
    )


# --------------------------------------------------------------------------- cross-entropy


def cross_entropy_min_bytes(n: int, v: int, itemsize: int) -> int:
    """Read logits (n, v) and labels (n,), write dlogits (n, v)."""
    return 2 * n * v * itemsize + n * INDEX_BYTES


def _cross_entropy_inputs(p: Params, device: torch.device, dtype: torch.dtype, seed: int, expected: bool) -> Inputs:
    g = generator(device, seed)
    logits = torch.randn(p["n"], p["v"], generator=g, device=device, dtype=dtype)
    Yb = torch.randint(0, p["v"], (p["n"],), generator=g, device=device)
    logit_maxes = logits.max(1, keepdim=True).values
    counts = (logits - logit_maxes).exp()
    counts_sum = counts.sum(1, keepdim=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    f = SimpleNamespace(
        logits=logits, Yb=Yb, counts=counts, counts_sum=counts_sum, counts_sum_inv=counts_sum_inv,
        probs=probs, logprobs=probs.log(),
    )  # fmt: skip
    return Inputs(f, {"logits": _cross_entropy_autograd(Inputs(f))()} if expected else None)


def _cross_entropy_autograd(inputs: Inputs) -> Thunk:
    logits = inputs.f.logits.detach().requires_grad_()
    call = autograd_call(F.cross_entropy(logits, inputs.f.Yb), [logits])
    return lambda: call()[0]


def _cross_entropy_impl(impl: Implementation, device: torch.device) -> tuple[Variant, ...]:
    found: list[Variant] = []
    if impl.has("ex2_cross_entropy.py"):
        fused = impl.function("ex2_cross_entropy.py", "cross_entropy_backward")
        found.append(
            Variant(
                "impl-fused", f"{impl.label} fused (ex 2)", lambda i: lambda: fused(i.f.logits, i.f.Yb),
                source=impl.label, student=True,
            )
        )  # fmt: skip
    found.extend(
        _triton_variants(impl, device, "cross_entropy_backward_triton", lambda fn, f: lambda: fn(f.logits, f.Yb))
    )
    return tuple(found)


CROSS_ENTROPY = Op(
    name="cross_entropy",
    title="cross-entropy backward",
    output="logits",
    axes=("n", "v"),
    baseline="chunked",
    min_bytes=cross_entropy_min_bytes,
    make_inputs=_cross_entropy_inputs,
    variants=(
        Variant("chunked", "chunked (ex 1)", lambda i: lambda: v.cross_entropy_chunked(i.f)),
        Variant("fused", "fused (ex 2)", lambda i: lambda: v.cross_entropy_fused(i.f.logits, i.f.Yb)),
        Variant("autograd", "autograd", _cross_entropy_autograd),
    ),
    impl_variants=_cross_entropy_impl,
    describe=lambda p: f"{p['n']}x{p['v']}",
)


# --------------------------------------------------------------------------- batchnorm


def batchnorm_min_bytes(n: int, c: int, itemsize: int) -> int:
    """Read dhpreact and bnraw (n, c) and bngain, bnvar_inv (1, c); write dhprebn (n, c)."""
    return (3 * n * c + 2 * c) * itemsize


def _batchnorm_inputs(p: Params, device: torch.device, dtype: torch.dtype, seed: int, expected: bool) -> Inputs:
    g = generator(device, seed)
    n, c = p["n"], p["c"]
    hprebn = torch.randn(n, c, generator=g, device=device, dtype=dtype) * 2 + 0.5
    bngain = torch.randn(1, c, generator=g, device=device, dtype=dtype) * 0.1 + 1.0
    dhpreact = torch.randn(n, c, generator=g, device=device, dtype=dtype)
    bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5) ** -0.5
    f = SimpleNamespace(
        hprebn=hprebn, bngain=bngain, bndiff=bndiff, bndiff2=bndiff2, bnvar=bnvar, bnvar_inv=bnvar_inv,
        bnraw=bndiff * bnvar_inv, dhpreact=dhpreact,
    )  # fmt: skip
    return Inputs(f, {"hprebn": _batchnorm_autograd(Inputs(f))()} if expected else None)


def _batchnorm_autograd(inputs: Inputs) -> Thunk:
    f = inputs.f
    x = f.hprebn.detach().requires_grad_()
    # Exercise 3's forward in one expression.
    hpreact = f.bngain * (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True, unbiased=True) + 1e-5)
    call = autograd_call(hpreact, [x], f.dhpreact)
    return lambda: call()[0]


def _batchnorm_impl(impl: Implementation, device: torch.device) -> tuple[Variant, ...]:
    found: list[Variant] = []
    if impl.has("ex3_batchnorm.py"):
        fused = impl.function("ex3_batchnorm.py", "batchnorm_backward")
        found.append(
            Variant(
                "impl-fused", f"{impl.label} fused (ex 3)",
                lambda i: lambda: fused(i.f.dhpreact, i.f.bngain, i.f.bnraw, i.f.bnvar_inv),
                source=impl.label, student=True,
            )
        )  # fmt: skip
    found.extend(
        _triton_variants(
            impl, device, "batchnorm_backward_triton",
            lambda fn, f: lambda: fn(f.dhpreact, f.bngain, f.bnraw, f.bnvar_inv),
        )
    )  # fmt: skip
    return tuple(found)


BATCHNORM = Op(
    name="batchnorm",
    title="batchnorm backward",
    output="hprebn",
    axes=("n", "c"),
    baseline="chunked",
    min_bytes=batchnorm_min_bytes,
    make_inputs=_batchnorm_inputs,
    variants=(
        Variant("chunked", "chunked (ex 1)", lambda i: lambda: v.batchnorm_chunked(i.f, i.f.dhpreact)),
        Variant(
            "fused",
            "fused (ex 3)",
            lambda i: lambda: v.batchnorm_fused(i.f.dhpreact, i.f.bngain, i.f.bnraw, i.f.bnvar_inv),
        ),
        Variant("autograd", "autograd", _batchnorm_autograd),
    ),  # fmt: skip
    impl_variants=_batchnorm_impl,
    describe=lambda p: f"{p['n']}x{p['c']}",
)


# --------------------------------------------------------------------------- embedding


def embedding_min_bytes(n: int, block: int, d: int, v: int, itemsize: int) -> int:
    """Read demb (n, block, d) and Xb (n, block); write dC (v, d)."""
    return n * block * d * itemsize + n * block * INDEX_BYTES + v * d * itemsize


def _embedding_inputs(p: Params, device: torch.device, dtype: torch.dtype, seed: int, expected: bool) -> Inputs:
    g = generator(device, seed)
    demb = torch.randn(p["n"], p["block"], p["d"], generator=g, device=device, dtype=dtype)
    Xb = torch.randint(0, p["v"], (p["n"], p["block"]), generator=g, device=device)
    f = SimpleNamespace(demb=demb, Xb=Xb, v=p["v"])
    if not expected:
        return Inputs(f)
    C = torch.zeros(p["v"], p["d"], device=device, dtype=dtype, requires_grad=True)
    return Inputs(f, {"C": torch.autograd.grad(C[Xb], C, demb)[0]})


def _embedding(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> Callable[[Inputs], Thunk]:
    return lambda i: lambda: fn(i.f.demb, i.f.Xb, i.f.v)


def _embedding_impl(impl: Implementation, device: torch.device) -> tuple[Variant, ...]:
    if not impl.has("ex4_embedding.py"):
        return ()
    fn = impl.function("ex4_embedding.py", "embedding_backward")
    return (Variant("impl", f"{impl.label} ex 4", _embedding(fn), source=impl.label, student=True),)


EMBEDDING = Op(
    name="embedding",
    title="embedding backward",
    output="C",
    axes=("n",),
    baseline="loop",
    min_bytes=embedding_min_bytes,
    make_inputs=_embedding_inputs,
    variants=(
        Variant(
            "loop",
            "python loop (ex 1)",
            _embedding(v.embedding_loop),
            fits=lambda p: p["n"] * p["block"] <= LOOP_ROWS,
        ),
        Variant("index_add", "index_add_ (ex 4)", _embedding(v.embedding_index_add)),
        Variant("one_hot", "one-hot matmul", _embedding(v.embedding_one_hot)),
        Variant("index_put", "index_put_(accumulate=True)", _embedding(v.embedding_index_put)),
    ),  # fmt: skip
    impl_variants=_embedding_impl,
    describe=lambda p: f"{p['n']}x{p['block']}x{p['d']}, {p['v']} rows",
)


OPS: tuple[Op, ...] = (CROSS_ENTROPY, BATCHNORM, EMBEDDING, MLP)


def get_op(name: str) -> Op:
    for op in OPS:
        if op.name == name:
            return op
    raise KeyError(f"no op {name!r}; the ops are {', '.join(op.name for op in OPS)}")
