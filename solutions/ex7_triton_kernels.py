"""Exercise 7: the fused backward passes of exercises 2 and 3 as GPU kernels, in Triton.

Exercise 2's three lines (softmax, subtract one at the label, divide by n) run
as three or more kernels in eager PyTorch, each reading and writing the whole
(n, vocab_size) matrix. One kernel can read the logits once and write dlogits
once, which is the least memory traffic the gradient allows:

    dlogits[i, j] = (exp(logits[i, j] - max_i) / sum_i - (j == Yb[i])) / n

where max_i and sum_i = sum_j exp(logits[i, j] - max_i) are per row. The
batchnorm backward of exercise 3 is, per column j with a = bngain * bnvar_inv::

    dhprebn = a * dhpreact - a / n * sum(dhpreact) - a / (n - 1) * bnraw * sum(dhpreact * bnraw)

with the sums over the batch: a reduction over every row before anything can
be written, so it is one pass to sum and one to write.

The module imports without Triton; the kernels are only compiled on first use.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # a machine without Triton can still import (and skip) this exercise
    triton = None
    tl = None


def _jit(fn):
    return triton.jit(fn) if triton is not None else fn


# A row of up to this many logits is held in registers: read once, written once.
# Longer rows are read twice, the second time mostly from L2.
_ROW_IN_REGISTERS = 32768


@_jit
def _cross_entropy_backward_row(
    logits_ptr, labels_ptr, dlogits_ptr, n_cols, logits_stride, dlogits_stride, inv_n, BLOCK: tl.constexpr
):
    # One program per row; BLOCK >= n_cols, so the whole row is loaded at once.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    # Padding lanes read -inf, so they add exp(-inf) = 0 to the sum.
    x = tl.load(logits_ptr + row * logits_stride + cols, mask=mask, other=float("-inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, axis=0))
    p = e / tl.sum(e, axis=0)
    label = tl.load(labels_ptr + row)
    g = tl.where(cols == label, p - 1.0, p) * inv_n
    tl.store(dlogits_ptr + row * dlogits_stride + cols, g.to(dlogits_ptr.dtype.element_ty), mask=mask)


@_jit
def _cross_entropy_backward_blocked(
    logits_ptr, labels_ptr, dlogits_ptr, n_rows, n_cols, logits_stride, dlogits_stride, inv_n, BLOCK: tl.constexpr
):
    # Each program walks rows pid, pid + programs, ...; few enough programs run at once
    # that their rows stay in L2 between the two passes.
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        src = logits_ptr + tl.cast(row, tl.int64) * logits_stride
        dst = dlogits_ptr + tl.cast(row, tl.int64) * dlogits_stride

        # Pass 1, the online softmax: keep the running max m and the sum d of exp(x - m);
        # when the max grows, rescale d by exp(m_old - m_new). The first block sets m.
        cols = tl.arange(0, BLOCK)
        x = tl.load(src + cols, mask=cols < n_cols, other=float("-inf"), eviction_policy="evict_last")
        m = tl.max(x.to(tl.float32), axis=0)
        d = tl.sum(tl.exp(x.to(tl.float32) - m), axis=0)
        for start in range(BLOCK, n_cols, BLOCK):
            block_cols = start + tl.arange(0, BLOCK)
            xb = tl.load(
                src + block_cols, mask=block_cols < n_cols, other=float("-inf"), eviction_policy="evict_last"
            ).to(tl.float32)
            m_new = tl.maximum(m, tl.max(xb, axis=0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(xb - m_new), axis=0)
            m = m_new

        # Pass 2: softmax, minus one at the label, over n.
        label = tl.load(labels_ptr + row)
        inv_d = 1.0 / d
        for start in range(0, n_cols, BLOCK):
            block_cols = start + tl.arange(0, BLOCK)
            mask = block_cols < n_cols
            xb = tl.load(src + block_cols, mask=mask, other=float("-inf"), eviction_policy="evict_first")
            p = tl.exp(xb.to(tl.float32) - m) * inv_d
            g = tl.where(block_cols == label, p - 1.0, p) * inv_n
            tl.store(dst + block_cols, g.to(dlogits_ptr.dtype.element_ty), mask=mask)


def cross_entropy_backward_triton(logits: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """Return dloss/dlogits for ``loss = F.cross_entropy(logits, Yb)``, in one kernel.

    Args:
        logits: (n, vocab_size) scores on a CUDA device.
        Yb: (n,) integer labels.

    Returns:
        dlogits, (n, vocab_size), the dtype of ``logits``.
    """
    _require_triton(logits)
    logits = logits.contiguous()
    Yb = Yb.contiguous()
    n, vocab_size = logits.shape
    dlogits = torch.empty_like(logits)
    block = triton.next_power_of_2(vocab_size)
    if block <= _ROW_IN_REGISTERS:
        # About 32 values a thread: enough loads in flight, no spilling.
        num_warps = min(16, max(4, block // 1024))
        _cross_entropy_backward_row[(n,)](
            logits, Yb, dlogits, vocab_size, logits.stride(0), dlogits.stride(0), 1.0 / n,
            BLOCK=block, num_warps=num_warps,
        )  # fmt: skip
        return dlogits
    programs = min(n, _programs_for_rows(logits.device, vocab_size * logits.element_size()))
    _cross_entropy_backward_blocked[(programs,)](
        logits, Yb, dlogits, n, vocab_size, logits.stride(0), dlogits.stride(0), 1.0 / n,
        BLOCK=4096, num_warps=8,
    )  # fmt: skip
    return dlogits


@_jit
def _batchnorm_partial_sums(
    dy_ptr, x_ptr, sum_dy_ptr, sum_dyx_ptr, n_rows, n_cols,
    ROWS_PER_PROGRAM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Program (c, r) sums columns c*BLOCK_C... over its ROWS_PER_PROGRAM rows and writes
    # one row of partial sums: sum(dy) and sum(dy * x), per column.
    pid_c = tl.program_id(0)
    pid_r = tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < n_cols
    acc_dy = tl.zeros([BLOCK_C], dtype=tl.float32)
    acc_dyx = tl.zeros([BLOCK_C], dtype=tl.float32)
    for start in range(0, ROWS_PER_PROGRAM, BLOCK_N):
        rows = pid_r * ROWS_PER_PROGRAM + start + tl.arange(0, BLOCK_N)
        mask = (rows[:, None] < n_rows) & col_mask[None, :]
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        # Masked elements read 0 and add nothing to either sum.
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        acc_dy += tl.sum(dy, axis=0)
        acc_dyx += tl.sum(dy * x, axis=0)
    tl.store(sum_dy_ptr + pid_r * n_cols + cols, acc_dy, mask=col_mask)
    tl.store(sum_dyx_ptr + pid_r * n_cols + cols, acc_dyx, mask=col_mask)


@_jit
def _batchnorm_coefficients(
    sum_dy_ptr, sum_dyx_ptr, gain_ptr, var_inv_ptr, coef_ptr, n_partials, n_rows, n_cols, BLOCK_C: tl.constexpr
):
    # Adds up the partial sums of a block of columns and folds everything per column
    # into dx = a * dy + b * x + c:  a = gain * var_inv,
    # b = -a * sum(dy * x) / (n - 1),  c = -a * sum(dy) / n.
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = cols < n_cols
    sum_dy = tl.zeros([BLOCK_C], dtype=tl.float32)
    sum_dyx = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p in range(0, n_partials):
        sum_dy += tl.load(sum_dy_ptr + p * n_cols + cols, mask=mask, other=0.0)
        sum_dyx += tl.load(sum_dyx_ptr + p * n_cols + cols, mask=mask, other=0.0)
    a = tl.load(gain_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    a = a * tl.load(var_inv_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(coef_ptr + cols, a, mask=mask)
    tl.store(coef_ptr + n_cols + cols, -a * sum_dyx / (n_rows - 1), mask=mask)
    tl.store(coef_ptr + 2 * n_cols + cols, -a * sum_dy / n_rows, mask=mask)


@_jit
def _batchnorm_apply(dy_ptr, x_ptr, coef_ptr, dx_ptr, n_rows, n_cols, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    # Rows are visited last to first: the summing pass read the last rows most
    # recently, so those are the ones still in L2.
    pid_c = tl.program_id(0)
    pid_r = tl.num_programs(1) - 1 - tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = pid_r * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows[:, None] < n_rows) & col_mask[None, :]
    offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    a = tl.load(coef_ptr + cols, mask=col_mask, other=0.0)
    b = tl.load(coef_ptr + n_cols + cols, mask=col_mask, other=0.0)
    c = tl.load(coef_ptr + 2 * n_cols + cols, mask=col_mask, other=0.0)
    dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    dx = a[None, :] * dy + b[None, :] * x + c[None, :]
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def batchnorm_backward_triton(
    dhpreact: torch.Tensor, bngain: torch.Tensor, bnraw: torch.Tensor, bnvar_inv: torch.Tensor
) -> torch.Tensor:
    """Return dloss/dhprebn given dloss/dhpreact: a summing pass, then a pass that writes.

    Args:
        dhpreact: (n, n_hidden) gradient of the batchnorm output, on a CUDA device.
        bngain: (1, n_hidden) scale.
        bnraw: (n, n_hidden) normalised input of the forward pass.
        bnvar_inv: (1, n_hidden) the forward pass's (bnvar + 1e-5)**-0.5.

    Returns:
        dhprebn, (n, n_hidden), the dtype of ``dhpreact``.
    """
    _require_triton(dhpreact)
    dy = dhpreact.contiguous()
    x = bnraw.contiguous()
    gain = bngain.reshape(-1).contiguous()
    var_inv = bnvar_inv.reshape(-1).contiguous()
    n, n_hidden = dy.shape
    block_n, block_c, rows_per_program = 32, 128, 256
    n_partials = triton.cdiv(n, rows_per_program)
    col_blocks = triton.cdiv(n_hidden, block_c)
    sum_dy = torch.empty((n_partials, n_hidden), dtype=torch.float32, device=dy.device)
    sum_dyx = torch.empty_like(sum_dy)
    coef = torch.empty((3, n_hidden), dtype=torch.float32, device=dy.device)
    dx = torch.empty_like(dy)
    _batchnorm_partial_sums[(col_blocks, n_partials)](
        dy, x, sum_dy, sum_dyx, n, n_hidden,
        ROWS_PER_PROGRAM=rows_per_program, BLOCK_N=block_n, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    _batchnorm_coefficients[(col_blocks,)](
        sum_dy, sum_dyx, gain, var_inv, coef, n_partials, n, n_hidden, BLOCK_C=block_c, num_warps=4
    )
    _batchnorm_apply[(col_blocks, triton.cdiv(n, block_n))](
        dy, x, coef, dx, n, n_hidden, BLOCK_N=block_n, BLOCK_C=block_c, num_warps=4
    )
    return dx


def _programs_for_rows(device: torch.device, row_bytes: int) -> int:
    """How many row programs to run at once: one an SM at least, and no more rows than half the L2 holds."""
    if device.type != "cuda":
        return 4
    props = torch.cuda.get_device_properties(device)
    l2_bytes = getattr(props, "L2_cache_size", 0) or 50 << 20
    return max(props.multi_processor_count, l2_bytes // (2 * row_bytes))


def _require_triton(t: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError("exercise 7 needs Triton: pip install triton (Linux, with a CUDA GPU)")
    # Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors, slowly: for debugging.
    if t.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"the Triton kernels run on a CUDA device, not {t.device}")
