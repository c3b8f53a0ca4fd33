"""Differentiable Gaussian rasterisers in plain torch: the renderers' forward model on any machine.

Both are :data:`.optimise.Rasterise` functions and draw what the CPU renderer draws (EWA
projection with the Jacobian clamp, ``EPS2D`` low-pass, per-splat alpha
``min(ALPHA_MAX, o * exp(power))`` dropped below ``ALPHA_MIN``, front-to-back in depth
order), with autograd for the backward pass. They let chunk optimisation run where gsplat
cannot (no CUDA): in tests, and in ``bench.chunk_optimise`` on a CPU.

* :func:`dense_rasteriser`: every pixel against every Gaussian (``[G, H*W]`` tensors), one
  global depth order. Exact; only for tiny scenes.
* :func:`windowed_rasteriser`: each Gaussian against the pixels of its own box (the
  opacity-aware extent the CPU renderer uses, capped at ``max_radius`` pixels), pairs
  sorted by pixel then depth, transmittance by a segmented cumulative sum of
  ``log(1 - alpha)``. Real chunks at a few seconds a step on a CPU.

``torch`` is imported on call: the default install imports this module without it.
"""

from __future__ import annotations

from ..render.conventions import ALPHA_MAX, ALPHA_MIN, EPS2D, JACOBIAN_CLAMP, NEAR_PLANE


def _covariances(quats, scales):
    """``[G, 3, 3]`` world covariances from quaternions ``[G, 4]`` (w first) and standard deviations ``[G, 3]``."""
    import torch

    q = torch.nn.functional.normalize(quats, dim=1)
    w, x, y, z = q.unbind(1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=1).reshape(-1, 3, 3)
    M = R * scales[:, None, :]
    return M @ M.transpose(1, 2)


def _project(means, cov3, viewmat, K, width: int, height: int):
    """One camera: ``(u, v, z, valid, conic (a, b, c), covariance diagonal (a, c))``, each ``[G]``.

    ``u, v``: pixel centre of each Gaussian; ``z``: depth (metres, 1 where invalid);
    ``valid``: in front of the near plane; the conic is the inverse of the low-passed 2D
    covariance, so ``power = -(a dx^2 + c dy^2) / 2 - b dx dy``.
    """
    import torch

    Rw, tw = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    p = means @ Rw.T + tw
    px, py, pz = p.unbind(1)
    valid = pz > NEAR_PLANE
    zs = torch.where(valid, pz, torch.ones_like(pz))
    slack_x, slack_y = JACOBIAN_CLAMP * 0.5 * width / fx, JACOBIAN_CLAMP * 0.5 * height / fy
    tx = zs * torch.clamp(px / zs, -(cx / fx + slack_x), (width - cx) / fx + slack_x)
    ty = zs * torch.clamp(py / zs, -(cy / fy + slack_y), (height - cy) / fy + slack_y)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], dim=1).reshape(-1, 2, 3)
    cov2 = J @ (Rw @ cov3 @ Rw.T) @ J.transpose(1, 2)
    a, b, c = cov2[:, 0, 0] + EPS2D, cov2[:, 0, 1], cov2[:, 1, 1] + EPS2D
    det = torch.clamp(a * c - b * b, min=1e-12)
    u, v = fx * px / zs + cx, fy * py / zs + cy
    return u, v, zs, valid, (c / det, -b / det, a / det), (a, c)


def _splat_alpha(opacities, power, keep):
    """Per-pair alpha: ``min(ALPHA_MAX, o exp(power))``, 0 where not ``keep``, past the peak or below ``ALPHA_MIN``."""
    import torch

    alpha = torch.clamp(opacities * torch.exp(torch.clamp(power, max=0.0)), max=ALPHA_MAX)
    keep = keep & (power <= 0) & (alpha >= ALPHA_MIN)
    return torch.where(keep, alpha, torch.zeros_like(alpha)), keep


def dense_rasteriser(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int):
    """Every pixel against every Gaussian (``[G, H*W]`` tensors per camera): tiny scenes only."""
    import torch

    cov3 = _covariances(quats, scales)
    u_px, v_px = torch.meshgrid(
        torch.arange(width, dtype=means.dtype, device=means.device) + 0.5,
        torch.arange(height, dtype=means.dtype, device=means.device) + 0.5,
        indexing="xy",
    )
    u_px, v_px = u_px.reshape(-1), v_px.reshape(-1)  # [P]
    rgbs, alphas = [], []
    for n in range(viewmats.shape[0]):
        u, v, z, valid, (ca, cb, cc), _ = _project(means, cov3, viewmats[n], Ks[n], width, height)
        dx = u[:, None] - u_px[None, :]
        dy = v[:, None] - v_px[None, :]
        power = -0.5 * (ca[:, None] * dx * dx + cc[:, None] * dy * dy) - cb[:, None] * dx * dy  # [G,P]
        alpha, _ = _splat_alpha(opacities[:, None], power, valid[:, None])
        order = torch.argsort(torch.where(valid, z, torch.full_like(z, float("inf"))))
        alpha = alpha[order]
        before = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1.0 - alpha[:-1]], dim=0), dim=0)  # transmittance
        weights = alpha * before  # [G,P]
        rgbs.append((weights.T @ colors[order]).reshape(height, width, -1))
        alphas.append(weights.sum(0).reshape(height, width))
    return torch.stack(rgbs), torch.stack(alphas)


WINDOW_RADII = (1, 2, 4, 8, 16, 32)
"""Window half-sizes (pixels): each Gaussian is drawn in the smallest that holds its box."""


def windowed_rasteriser(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int, max_radius: int = 16):
    """Each Gaussian against the pixels of its box only (the CPU renderer's opacity-aware
    extent), capped at ``max_radius`` pixels each way: a Gaussian wider than that on screen
    is cut at its window's edge (the one approximation; the renderers' own tiles are exact)."""
    import torch

    cov3 = _covariances(quats, scales)
    dev = means.device
    rgbs, alphas = [], []
    for n in range(viewmats.shape[0]):
        u, v, z, valid, (ca, cb, cc), (va, vc) = _project(means, cov3, viewmats[n], Ks[n], width, height)
        with torch.no_grad():  # which pixels each Gaussian may reach (no gradient through a box)
            k = torch.sqrt(2.0 * torch.log(torch.clamp(opacities / ALPHA_MIN, min=1.0)))
            extent = torch.ceil(k * torch.sqrt(torch.maximum(va, vc)) + 0.5)
            radius = torch.clamp(extent, 1, max_radius).long()
            on_screen = valid & (k > 0) & (u + extent > 0) & (u - extent < width) & (v + extent > 0) & (v - extent < height)
        pairs_g, pairs_p, pairs_a = [], [], []
        lower = 0
        for R in (r for r in WINDOW_RADII if r <= max_radius):
            g = torch.nonzero(on_screen & (radius > lower) & (radius <= R)).reshape(-1)
            lower = R
            if g.numel() == 0:
                continue
            offsets = torch.arange(-R, R + 1, device=dev)
            X = torch.floor(u[g].detach()).long()[:, None, None] + offsets[None, None, :]  # [g, 1, w]
            Y = torch.floor(v[g].detach()).long()[:, None, None] + offsets[None, :, None]  # [g, w, 1]
            inside = (X >= 0) & (X < width) & (Y >= 0) & (Y < height)  # [g, w, w]
            dx = u[g][:, None, None] - (X + 0.5)
            dy = v[g][:, None, None] - (Y + 0.5)
            power = -0.5 * (ca[g][:, None, None] * dx * dx + cc[g][:, None, None] * dy * dy) - cb[g][:, None, None] * dx * dy
            alpha, keep = _splat_alpha(opacities[g][:, None, None], power, inside)
            pairs_g.append(g[:, None, None].expand_as(keep)[keep])
            pairs_p.append((Y * width + X).expand_as(keep)[keep])
            pairs_a.append(alpha[keep])
        P = width * height
        if not pairs_g:
            rgbs.append(torch.zeros((height, width, colors.shape[1]), dtype=colors.dtype, device=dev))
            alphas.append(torch.zeros((height, width), dtype=colors.dtype, device=dev))
            continue
        gid, pix, alpha = torch.cat(pairs_g), torch.cat(pairs_p), torch.cat(pairs_a)
        # Order the pairs by pixel, then front to back (two stable sorts).
        order = torch.argsort(z.detach()[gid], stable=True)
        order = order[torch.argsort(pix[order], stable=True)]
        gid, pix, alpha = gid[order], pix[order], alpha[order]
        # Transmittance before each pair: exp of the sum of log(1 - alpha) over the pairs in
        # front of it at its pixel (a cumulative sum restarted at each pixel; float64 so the
        # long running sum loses nothing).
        log_t = torch.log1p(-alpha).double()
        before = torch.cumsum(log_t, 0) - log_t
        first = torch.ones_like(pix, dtype=torch.bool)
        first[1:] = pix[1:] != pix[:-1]
        start = torch.cummax(torch.where(first, torch.arange(len(pix), device=dev), torch.zeros_like(pix)), 0).values
        weights = alpha * torch.exp(before - before[start]).to(alpha.dtype)
        rgb = torch.zeros((P, colors.shape[1]), dtype=colors.dtype, device=dev).index_add(0, pix, weights[:, None] * colors[gid])
        acc = torch.zeros(P, dtype=colors.dtype, device=dev).index_add(0, pix, weights)
        rgbs.append(rgb.reshape(height, width, -1))
        alphas.append(acc.reshape(height, width))
    return torch.stack(rgbs), torch.stack(alphas)


def rasteriser(name: str):
    """A plain-torch rasteriser by name: ``dense`` or ``windowed``."""
    found = {"dense": dense_rasteriser, "windowed": windowed_rasteriser}.get(name)
    if found is None:
        raise ValueError(f"rasteriser must be 'dense' or 'windowed', got {name!r}")
    return found
