"""Plain NumPy reference implementations (float64) for the fastconv API.

These are written to be obviously correct rather than fast:

* convolutions pad the input with ``np.pad`` and loop over the kernel
  offsets ``(r, s)``, using a strided slice of the padded input and an
  ``einsum`` over the (grouped) channels for each offset;
* the backward / transposed convolutions scatter-add the same slices;
* pooling follows PyTorch's CPU kernels (``MaxPoolKernel.cpp`` /
  ``AvgPoolKernel.cpp``) window by window.

All functions take and return float64 ``np.ndarray`` (inputs of other float
dtypes are converted to float64 first).  Nothing here imports fastconv or torch.
"""

import numpy as np

__all__ = [
    "pair",
    "conv_out_size",
    "pool_out_size",
    "resolve_conv_padding",
    "conv2d",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "conv_transpose2d",
    "conv_transpose_out_size",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool_has_empty_window",
    "avg_pool2d",
    "avg_pool2d_backward",
]


# ---------------------------------------------------------------------------
# parameter helpers
# ---------------------------------------------------------------------------
def pair(v):
    """int -> (v, v); 2-sequence -> tuple."""
    if isinstance(v, (tuple, list)):
        assert len(v) == 2
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_out_size(size, pad_before, pad_after, kernel, stride, dilation):
    """floor((H + pt + pb - d*(R-1) - 1) / s) + 1."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def pool_out_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's ``pooling_output_shape`` (symmetric padding)."""
    num = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-num // stride) + 1  # ceil division for num >= 0
        # the last window must start inside the input or the left padding
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = num // stride + 1
    return out


def resolve_conv_padding(padding, kernel_hw, dilation_hw):
    """Return ((top, bottom), (left, right)) for an int / pair / 'valid' / 'same'.

    'same' follows PyTorch: total = d*(k-1), left = total // 2, the extra one
    (odd total) goes to the right / bottom.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            res = []
            for k, d in zip(kernel_hw, dilation_hw):
                total = d * (k - 1)
                left = total // 2
                res.append((left, total - left))
            return tuple(res)
        raise ValueError(padding)
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _as_batched(x):
    x = _f64(x)
    if x.ndim == 3:
        return x[None], True
    assert x.ndim == 4, x.shape
    return x, False


# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    x, unbatched = _as_batched(x)
    w = _f64(w)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    G = groups
    assert C == Cg * G and K % G == 0
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (pt, pb), (pl, pr) = resolve_conv_padding(padding, (R, S), (dh, dw))
    Ho = conv_out_size(H, pt, pb, R, sh, dh)
    Wo = conv_out_size(W, pl, pr, S, sw, dw)
    assert Ho >= 1 and Wo >= 1
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xg = xp.reshape(N, G, Cg, H + pt + pb, W + pl + pr)
    wg = w.reshape(G, K // G, Cg, R, S)
    out = np.zeros((N, G, K // G, Ho, Wo))
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dh, s * dw
            patch = xg[:, :, :, h0:h0 + sh * (Ho - 1) + 1:sh, w0:w0 + sw * (Wo - 1) + 1:sw]
            out += np.einsum("ngchw,gkc->ngkhw", patch, wg[:, :, :, r, s])
    out = out.reshape(N, K, Ho, Wo)
    if b is not None:
        out += _f64(b).reshape(1, K, 1, 1)
    return out[0] if unbatched else out


def conv2d_input_grad(input_shape, w, grad_output, stride=1, padding=0, dilation=1, groups=1):
    w = _f64(w)
    go = _f64(grad_output)
    N, C, H, W = input_shape
    K, Cg, R, S = w.shape
    G = groups
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (pt, pb), (pl, pr) = resolve_conv_padding(padding, (R, S), (dh, dw))
    Ho = conv_out_size(H, pt, pb, R, sh, dh)
    Wo = conv_out_size(W, pl, pr, S, sw, dw)
    assert go.shape == (N, K, Ho, Wo), (go.shape, (N, K, Ho, Wo))
    gxp = np.zeros((N, G, Cg, H + pt + pb, W + pl + pr))
    gog = go.reshape(N, G, K // G, Ho, Wo)
    wg = w.reshape(G, K // G, Cg, R, S)
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dh, s * dw
            gxp[:, :, :, h0:h0 + sh * (Ho - 1) + 1:sh, w0:w0 + sw * (Wo - 1) + 1:sw] += np.einsum(
                "ngkhw,gkc->ngchw", gog, wg[:, :, :, r, s])
    gxp = gxp.reshape(N, C, H + pt + pb, W + pl + pr)
    return gxp[:, :, pt:pt + H, pl:pl + W].copy()


def conv2d_weight_grad(x, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1):
    x = _f64(x)
    go = _f64(grad_output)
    N, C, H, W = x.shape
    K, Cg, R, S = weight_shape
    G = groups
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (pt, pb), (pl, pr) = resolve_conv_padding(padding, (R, S), (dh, dw))
    Ho = conv_out_size(H, pt, pb, R, sh, dh)
    Wo = conv_out_size(W, pl, pr, S, sw, dw)
    assert go.shape == (N, K, Ho, Wo), (go.shape, (N, K, Ho, Wo))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xg = xp.reshape(N, G, Cg, H + pt + pb, W + pl + pr)
    gog = go.reshape(N, G, K // G, Ho, Wo)
    gw = np.zeros((G, K // G, Cg, R, S))
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dh, s * dw
            patch = xg[:, :, :, h0:h0 + sh * (Ho - 1) + 1:sh, w0:w0 + sw * (Wo - 1) + 1:sw]
            gw[:, :, :, r, s] = np.einsum("ngkhw,ngchw->gkc", gog, patch)
    return gw.reshape(K, Cg, R, S)


def conv_transpose_out_size(size, kernel, stride, pad, output_padding, dilation):
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed convolution written as a direct scatter (kernel offsets r, q):

    out[n, g*Og + o, ih*sh - ph + r*dh, iw*sw - pw + q*dw]
        += x[n, g*Cg + c, ih, iw] * w[g*Cg + c, o, r, q]
    """
    x, unbatched = _as_batched(x)
    w = _f64(w)
    N, C, H, W = x.shape
    Cw, Og, R, S = w.shape
    G = groups
    assert Cw == C and C % G == 0
    Cg = C // G
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    oph, opw = pair(output_padding)
    dh, dw = pair(dilation)
    Ho = conv_transpose_out_size(H, R, sh, ph, oph, dh)
    Wo = conv_transpose_out_size(W, S, sw, pw, opw, dw)
    assert Ho >= 1 and Wo >= 1
    # full (uncropped) output buffer: index = ih*s + r*d  (i.e. shifted by +p)
    Hf = max((H - 1) * sh + dh * (R - 1) + 1, ph + Ho)
    Wf = max((W - 1) * sw + dw * (S - 1) + 1, pw + Wo)
    full = np.zeros((N, G, Og, Hf, Wf))
    xg = x.reshape(N, G, Cg, H, W)
    wg = w.reshape(G, Cg, Og, R, S)
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dh, s * dw
            full[:, :, :, h0:h0 + sh * (H - 1) + 1:sh, w0:w0 + sw * (W - 1) + 1:sw] += np.einsum(
                "ngchw,gco->ngohw", xg, wg[:, :, :, r, s])
    out = full[:, :, :, ph:ph + Ho, pw:pw + Wo].reshape(N, G * Og, Ho, Wo).copy()
    if b is not None:
        out += _f64(b).reshape(1, G * Og, 1, 1)
    return out[0] if unbatched else out


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------
def _pool_params(kernel_size, stride, padding, dilation=1):
    kh, kw = pair(kernel_size)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    return kh, kw, sh, sw, ph, pw, dh, dw


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Mirror of PyTorch's CPU max pooling (NCHW, ``cpu_max_pool``).

    For each output the window positions ih = oh*s - p + i*d (0 <= i < k) that
    fall inside the input are scanned row-major starting from
    maxval = -inf, maxindex = first valid position, and the running maximum is
    replaced when ``val > maxval or isnan(val)``.  Hence: ties -> first max,
    a window of -inf -> first valid position, NaN -> the *last* NaN in the
    window and the output is NaN.
    """
    x = _f64(x)
    N, C, H, W = x.shape
    kh, kw, sh, sw, ph, pw, dh, dw = _pool_params(kernel_size, stride, padding, dilation)
    Ho = pool_out_size(H, kh, sh, ph, dh, ceil_mode)
    Wo = pool_out_size(W, kw, sw, pw, dw, ceil_mode)
    assert Ho >= 1 and Wo >= 1
    out = np.empty((N, C, Ho, Wo))
    idx = np.empty((N, C, Ho, Wo), dtype=np.int64)
    for oh in range(Ho):
        rows = [oh * sh - ph + i * dh for i in range(kh)]
        rows = [h for h in rows if 0 <= h < H]
        for ow in range(Wo):
            cols = [ow * sw - pw + j * dw for j in range(kw)]
            cols = [c for c in cols if 0 <= c < W]
            if not rows or not cols:
                # possible with dilation; PyTorch then reports -inf and a
                # meaningless index, fastconv's behaviour is unspecified.
                raise ValueError("max_pool2d window without any input element")
            maxval = np.full((N, C), -np.inf)
            maxidx = np.full((N, C), rows[0] * W + cols[0], dtype=np.int64)
            for h in rows:
                for c in cols:
                    val = x[:, :, h, c]
                    upd = (val > maxval) | np.isnan(val)
                    maxval = np.where(upd, val, maxval)
                    maxidx = np.where(upd, h * W + c, maxidx)
            out[:, :, oh, ow] = maxval
            idx[:, :, oh, ow] = maxidx
    if return_indices:
        return out, idx
    return out


def max_pool_has_empty_window(H, W, kernel_size, stride=None, padding=0, dilation=1,
                              ceil_mode=False):
    """True if some output window of max_pool2d contains no input element."""
    kh, kw, sh, sw, ph, pw, dh, dw = _pool_params(kernel_size, stride, padding, dilation)
    for size, k, s, p, d in ((H, kh, sh, ph, dh), (W, kw, sw, pw, dw)):
        n = pool_out_size(size, k, s, p, d, ceil_mode)
        if n < 1:
            return True
        for o in range(n):
            if not any(0 <= o * s - p + i * d < size for i in range(k)):
                return True
    return False


def max_pool2d_backward(grad_output, indices, input_shape):
    go = _f64(grad_output)
    indices = np.asarray(indices)
    N, C, H, W = input_shape
    gi = np.zeros((N, C, H * W))
    go2 = go.reshape(N, C, go.shape[2] * go.shape[3])
    ix2 = indices.reshape(N, C, indices.shape[2] * indices.shape[3])
    for n in range(N):
        for c in range(C):
            np.add.at(gi[n, c], ix2[n, c], go2[n, c])
    return gi.reshape(N, C, H, W)


def _avg_windows(H, W, kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad, divisor_override):
    """Yield (oh, ow, h0, h1, w0, w1, divisor) following PyTorch's cpu_avg_pool.

    h0 = oh*s - p, h1 = min(h0 + k, H + p), pool_size = (h1-h0)*(w1-w0) is
    taken BEFORE clipping to the input; windows with no input element give 0.
    """
    Ho = pool_out_size(H, kh, sh, ph, 1, ceil_mode)
    Wo = pool_out_size(W, kw, sw, pw, 1, ceil_mode)
    for oh in range(Ho):
        for ow in range(Wo):
            h0 = oh * sh - ph
            w0 = ow * sw - pw
            h1 = min(h0 + kh, H + ph)
            w1 = min(w0 + kw, W + pw)
            pool_size = (h1 - h0) * (w1 - w0)
            h0, w0 = max(h0, 0), max(w0, 0)
            h1, w1 = min(h1, H), min(w1, W)
            if h0 >= h1 or w0 >= w1:
                yield oh, ow, h0, h1, w0, w1, None
                continue
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = pool_size
            else:
                div = (h1 - h0) * (w1 - w0)
            yield oh, ow, h0, h1, w0, w1, div


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    x = _f64(x)
    N, C, H, W = x.shape
    kh, kw, sh, sw, ph, pw, _, _ = _pool_params(kernel_size, stride, padding)
    Ho = pool_out_size(H, kh, sh, ph, 1, ceil_mode)
    Wo = pool_out_size(W, kw, sw, pw, 1, ceil_mode)
    assert Ho >= 1 and Wo >= 1
    out = np.zeros((N, C, Ho, Wo))
    for oh, ow, h0, h1, w0, w1, div in _avg_windows(H, W, kh, kw, sh, sw, ph, pw, ceil_mode,
                                                     count_include_pad, divisor_override):
        if div is None:
            continue
        out[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / div
    return out


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    go = _f64(grad_output)
    N, C, H, W = input_shape
    kh, kw, sh, sw, ph, pw, _, _ = _pool_params(kernel_size, stride, padding)
    Ho = pool_out_size(H, kh, sh, ph, 1, ceil_mode)
    Wo = pool_out_size(W, kw, sw, pw, 1, ceil_mode)
    assert go.shape == (N, C, Ho, Wo), (go.shape, (N, C, Ho, Wo))
    gi = np.zeros((N, C, H, W))
    for oh, ow, h0, h1, w0, w1, div in _avg_windows(H, W, kh, kw, sh, sw, ph, pw, ceil_mode,
                                                     count_include_pad, divisor_override):
        if div is None:
            continue
        gi[:, :, h0:h1, w0:w1] += (go[:, :, oh, ow] / div)[:, :, None, None]
    return gi
