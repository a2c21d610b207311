"""3x3 convolutions by Winograd's minimal filtering algorithm F(m x m, 3x3) (Lavin & Gray 2016, "Fast Algorithms
for Convolutional Neural Networks", CVPR 2016), in its nested 2-D form:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

over (m+2) x (m+2) input tiles d taken with stride m, each giving an m x m output tile. Summed over input
channels, the elementwise product becomes alpha^2 = (m+2)^2 independent matrix products M_k = V_k @ U_k
([tiles, C_in] x [C_in, C_out]), so one output pixel and channel pair costs alpha^2 / m^2 multiply-adds instead of
the direct convolution's 9: 4 for F(2x2, 3x3), 2.25 for F(4x4, 3x3) (the default; its larger tiles also copy the
input less, 2.25x against 4x, at a rounding error of about 1e-5 of the output's scale in fp32). The transforms'
cost grows with the channels while the products' grows with their square: the algorithm wins on wide layers over
enough pixels, which is where a U-Net's training step spends most of its convolution time (`tile_size` decides;
bench/fast_paths.py --only winograd measures it).

The backward pass stays in the Winograd domain: dM is the adjoint of the output transform applied to dY; dV = dM U^T
and dU^T = dM^T V are two more products of the same size; dx and dg are the adjoints of the input and weight
transforms. Three products in all, where a direct convolution's forward, data and weight gradients are three
convolutions.

Tensors are worked on channels-last ([N, H, W, C]), the layout `from_pretrained` and the trainer use; on a GPU and
under autocast the direct convolution runs (cuDNN and oneDNN choose their own algorithms there).
"""

from __future__ import annotations

import torch

# The matrices of Lavin & Gray 2016 for F(2x2, 3x3) and F(4x4, 3x3) (interpolation points 0, +-1, +-2, inf):
# B^T (alpha x alpha), G (alpha x 3), A^T (m x alpha), alpha = m + 2. tests/core/test_winograd.py checks them
# against conv2d in float64.
MATRICES = {
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
         (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
}
_GG = {m: torch.kron(torch.tensor(g, dtype=torch.float64), torch.tensor(g, dtype=torch.float64))
       for m, (_, g, _) in MATRICES.items()}   # [alpha^2, 9]: (G g G^T) flattened, one matrix over the 9 taps

MIN_CHANNELS = 96   # narrower layers lose (bench/fast_paths.py --only winograd): their products are memory-bound
# batch x height x width below which the weight transform outweighs the saved products: 1024 when training (the
# backward reuses the transformed input and weights for two more products), 4096 in inference (the bundled SR
# stage's 32x32 level at batch 1-2 ran 0.89x-0.99x, its base stage at batch 2, 128 channels at 8x8, 0.77x)
MIN_PIXELS = 1024
MIN_PIXELS_INFERENCE = 4096
ENABLED = True      # a switch for tests and benchmarks


def tile_size(x: torch.Tensor, weight: torch.Tensor, stride) -> int:
    """m of the F(m x m, 3x3) that a 'same' 3x3 convolution of x (unpadded) should use, or 0 for the direct
    convolution: only fp32 on CPU (GPU libraries choose their own algorithms; under autocast the direct convolution
    runs in bf16), channels-last input, stride 1, both channel counts >= MIN_CHANNELS and batch x height x width >=
    MIN_PIXELS (MIN_PIXELS_INFERENCE without autograd), not while torch.compile traces (inductor plans its own
    convolutions; traced, this path ran 0.49 s against 0.37 s eager per step); m = 4 where the height and width are
    multiples of 4, m = 2 where they are even."""
    n, c, h, w = x.shape
    min_pixels = MIN_PIXELS if torch.is_grad_enabled() else MIN_PIXELS_INFERENCE
    if not (ENABLED and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and tuple(weight.shape[2:]) == (3, 3) and stride in (1, (1, 1))
            and min(c, weight.shape[0]) >= MIN_CHANNELS and n * h * w >= min_pixels
            and x.is_contiguous(memory_format=torch.channels_last) and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()):
        return 0
    return next((m for m in (4, 2) if h % m == 0 and w % m == 0), 0)


def _combine(terms, out):
    """out = sum of coef * tensor over the (coef, tensor) terms, in place (one pass per term)."""
    terms = sorted(terms, key=lambda term: term[0] != 1)   # a coefficient-1 term first where there is one
    (c0, t0), rest = terms[0], terms[1:]
    if c0 == 1 and rest:
        torch.add(t0, rest[0][1], alpha=rest[0][0], out=out)
        rest = rest[1:]
    elif c0 == 1:
        out.copy_(t0)
    else:
        torch.mul(t0, c0, out=out)
    for c, t in rest:
        out.add_(t, alpha=c)
    return out


def _terms(matrix, i, pick):
    return [(c, pick(j)) for j, c in enumerate(matrix[i]) if c]


def _transpose(matrix):
    return tuple(zip(*matrix))


def input_transform(d: torch.Tensor, m: int) -> torch.Tensor:
    """d: [N, m th + 2, m tw + 2, C] -> V = B^T d B of every (m+2)^2 tile, stride m: [alpha, alpha, N, th, tw, C]."""
    b_t, alpha = MATRICES[m][0], m + 2
    n, hp, wp, c = d.shape
    th, tw = (hp - 2) // m, (wp - 2) // m
    rows = d.new_empty(alpha, n, th, wp, c)
    for r in range(alpha):
        _combine(_terms(b_t, r, lambda a: d[:, a:a + m * th:m]), rows[r])
    v = d.new_empty(alpha, alpha, n, th, tw, c)
    for s in range(alpha):
        _combine(_terms(b_t, s, lambda b: rows[:, :, :, b:b + m * tw:m]), v[:, s])
    return v


def input_transform_adjoint(dv: torch.Tensor) -> torch.Tensor:
    """The adjoint of `input_transform`: [alpha, alpha, N, th, tw, C] -> [N, m th + 2, m tw + 2, C], the overlapping
    tiles summed."""
    alpha, _, n, th, tw, c = dv.shape
    m = alpha - 2
    b = _transpose(MATRICES[m][0])
    rows = dv.new_zeros(alpha, n, th, m * tw + 2, c)
    for col in range(alpha):
        rows[:, :, :, col:col + m * tw:m].add_(_combine(_terms(b, col, lambda s: dv[:, s]), dv.new_empty(dv.shape[1:])))
    d = dv.new_zeros(n, m * th + 2, m * tw + 2, c)
    for row in range(alpha):
        d[:, row:row + m * th:m].add_(_combine(_terms(b, row, lambda r: rows[r]), rows.new_empty(rows.shape[1:])))
    return d


def output_transform(mm: torch.Tensor) -> torch.Tensor:
    """mm: [alpha, alpha, N, th, tw, C] -> Y = A^T mm A of every tile, assembled: [N, m th, m tw, C]."""
    alpha, _, n, th, tw, c = mm.shape
    m = alpha - 2
    a_t = MATRICES[m][2]
    half = mm.new_empty(m, alpha, n, th, tw, c)
    for p in range(m):
        _combine(_terms(a_t, p, lambda r: mm[r]), half[p])
    y = mm.new_empty(n, th, m, tw, m, c)
    y_qp = y.permute(4, 2, 0, 1, 3, 5)   # [q, p, N, th, tw, C]
    for q in range(m):
        _combine(_terms(a_t, q, lambda s: half[:, s]), y_qp[q])
    return y.view(n, m * th, m * tw, c)


def output_transform_adjoint(dy: torch.Tensor, m: int) -> torch.Tensor:
    """The adjoint of `output_transform`: [N, m th, m tw, C] -> [alpha, alpha, N, th, tw, C]."""
    a, alpha = _transpose(MATRICES[m][2]), m + 2
    n, h, w, c = dy.shape
    th, tw = h // m, w // m
    dy_qp = dy.view(n, th, m, tw, m, c).permute(4, 2, 0, 1, 3, 5)
    half = dy.new_empty(m, alpha, n, th, tw, c)
    for s in range(alpha):
        _combine(_terms(a, s, lambda q: dy_qp[q]), half[:, s])
    dm = dy.new_empty(alpha, alpha, n, th, tw, c)
    for r in range(alpha):
        _combine(_terms(a, r, lambda p: half[p]), dm[r])
    return dm


def weight_transform(g: torch.Tensor, m: int) -> torch.Tensor:
    """g: [C_out, C_in, 3, 3] -> U = G g G^T per channel pair, as alpha^2 matrices [alpha^2, C_in, C_out]."""
    c_out, c_in = g.shape[:2]
    taps = g.permute(0, 2, 3, 1).reshape(c_out, 9, c_in)   # free for channels-last weights
    return torch.matmul(_GG[m].to(g.dtype), taps).permute(1, 2, 0)


def weight_transform_adjoint(du_t: torch.Tensor, m: int) -> torch.Tensor:
    """The adjoint of `weight_transform`, from the transposed gradient dU^T [alpha^2, C_out, C_in] to
    [C_out, C_in, 3, 3] (channels-last)."""
    _, c_out, c_in = du_t.shape
    taps = torch.matmul(_GG[m].T.to(du_t.dtype), du_t.permute(1, 0, 2))   # [C_out, 9, C_in]
    return taps.view(c_out, 3, 3, c_in).permute(0, 3, 1, 2)


class Winograd3x3(torch.autograd.Function):
    """conv2d(x, weight, bias) without padding, 3x3 kernel, stride 1, by F(m x m, 3x3); H - 2 and W - 2 divisible
    by m."""

    @staticmethod
    def forward(ctx, x, weight, bias, m):
        d = x.permute(0, 2, 3, 1)
        if not d.is_contiguous():
            d = d.contiguous()
        n, hp, wp, c_in = d.shape
        v = input_transform(d, m)
        u = weight_transform(weight, m)
        mm = torch.bmm(v.view((m + 2) ** 2, -1, c_in), u).view(*v.shape[:-1], -1)
        y = output_transform(mm)
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(v, u)
        ctx.m, ctx.has_bias = m, bias is not None
        return y.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_y):
        v, u = ctx.saved_tensors
        m, (tiles, c_in, c_out) = ctx.m, u.shape
        dy = grad_y.permute(0, 2, 3, 1)
        if not dy.is_contiguous():
            dy = dy.contiguous()
        dm = output_transform_adjoint(dy, m).view(tiles, -1, c_out)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = input_transform_adjoint(torch.bmm(dm, u.transpose(1, 2)).view(v.shape)).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            dw = weight_transform_adjoint(torch.bmm(dm.transpose(1, 2), v.view(tiles, -1, c_in)), m)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 1, 2))
        return dx, dw, db, None


def winograd_conv2d(x, weight, bias=None, m: int = 4):
    """Valid (unpadded) 3x3 convolution of an already padded x by F(m x m, 3x3); see the module docstring."""
    return Winograd3x3.apply(x, weight, bias, m)
