"""Sample-quality figures: Fréchet distance between feature sets, and image grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def _sqrtm_psd(m: Tensor) -> Tensor:
    """Symmetric PSD square root by eigen-decomposition (negative round-off eigenvalues -> 0)."""
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """FD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2·(Σ₁^½ Σ₂ Σ₁^½)^½)  (float64; the FID formula)."""
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _sqrtm_psd(cov1)
    cross = _sqrtm_psd(s1 @ cov2 @ s1)
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * torch.trace(cross))


def feature_stats(features: Tensor):
    """Mean and (unbiased) covariance of `[n, d]` features, float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def image_grid(images: Tensor, rows: int) -> Image.Image:
    """`[n, C, H, W]` in [-1, 1] -> a grayscale/RGB PIL grid with `rows` rows (1-pixel gaps)."""
    n, c, h, w = images.shape
    cols = -(-n // rows)
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    canvas = torch.full((c, rows * (h + 1) + 1, cols * (w + 1) + 1), 255, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = x[i]
    arr = canvas.permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if c == 1 else arr)


def save_grid(images: Tensor, rows: int, path: Path, scale: int = 4) -> Image.Image:
    """Write the grid as a PNG, upscaled `scale`× (nearest) so 16×16 digits are visible."""
    grid = image_grid(images, rows)
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid


def grid_array(grid: Image.Image) -> np.ndarray:
    """HWC uint8 array of a PIL grid (for TensorBoard's `add_image`)."""
    arr = np.asarray(grid)
    return arr[..., None] if arr.ndim == 2 else arr
