"""Image-level changes to 8×8 digits: natural variation, covariate drift, out-of-distribution.

Three families, from harmless to hostile:

- `natural_variation`: another person's writing of the same digit (small affine jitter, ink
  gain, sensor noise). Benign.
- `scanner_drift`: a new capture pipeline — lower contrast, a grey background, more noise —
  the covariate shift a drift detector exists for. Rabanser, Günnemann & Lipton, "Failing
  Loudly: An Empirical Study of Methods for Detecting Dataset Shift" (NeurIPS 2019) use
  exactly such noise and intensity shifts as their benchmark shifts.
- `natural_ood`: natural-looking images that are not digits the service was built for
  (inverted, rotated, mirrored, blended, zoomed, shifted). KnockoffNets (Orekondy, Schiele &
  Fritz, CVPR 2019) steal models with such transfer sets. scikit-learn's other bundled images
  (china.jpg, flower.jpg) would need Pillow to decode, so the out-of-distribution set is built
  from transformed held-out digits, which is enough to put inputs off the data manifold.

All functions take and return (n, 64) arrays with pixels in [0, 1], row-major 8×8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from mlwarden.streams.simulation.traffic import FloatArray

_SIDE: Final = 8
_CENTRE: Final = (_SIDE - 1) / 2.0
_CENTRED_PIXELS: Final = (
    np.stack(np.meshgrid(np.arange(_SIDE), np.arange(_SIDE), indexing="ij"), axis=-1).reshape(-1, 2)
    - _CENTRE
)


def handwriting_jitter(
    images: FloatArray,
    rng: np.random.Generator,
    *,
    rotation_deg: float = 8.0,
    scale: float = 0.06,
    shear: float = 0.1,
    shift_px: float = 0.4,
) -> FloatArray:
    """Each image under its own small random affine map (rotation, scale, shear, sub-pixel shift).

    This is the classic way of synthesising new handwriting from a finite set of samples
    (Simard, Steinkraus & Platt, ICDAR 2003). Without it, a busy client drawing from the 719
    held-out digits would send near-copies of the same images, which no real user does and
    which distance-based extraction detectors (PRADA) rightly find suspicious.
    """
    n = len(images)
    angle = np.radians(rng.uniform(-rotation_deg, rotation_deg, n))
    zoom = rng.uniform(1.0 - scale, 1.0 + scale, n)
    skew = rng.uniform(-shear, shear, n)
    offset = rng.uniform(-shift_px, shift_px, (n, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    # Output pixel (r, c) samples the source at M·(r, c) about the centre, minus the shift.
    r, c = _CENTRED_PIXELS[None, :, 0], _CENTRED_PIXELS[None, :, 1]
    m00, m01 = (cos / zoom)[:, None], ((cos * skew - sin) / zoom)[:, None]
    m10, m11 = (sin / zoom)[:, None], ((sin * skew + cos) / zoom)[:, None]
    source_row = m00 * r + m01 * c + _CENTRE - offset[:, :1]
    source_col = m10 * r + m11 * c + _CENTRE - offset[:, 1:]
    return _bilinear(images, source_row, source_col)


def _bilinear(images: FloatArray, rows: FloatArray, cols: FloatArray) -> FloatArray:
    """Sample each image at (n, 64) fractional positions; zero outside the frame."""
    n = len(images)
    width = _SIDE + 3  # one zero pixel before the frame, two after: every neighbour exists
    padded = np.zeros((n, width, width))
    padded[:, 1 : _SIDE + 1, 1 : _SIDE + 1] = images.reshape(n, _SIDE, _SIDE)
    flat = padded.reshape(-1)
    rows = np.clip(rows, -1.0, float(_SIDE))
    cols = np.clip(cols, -1.0, float(_SIDE))
    row_low, col_low = np.floor(rows), np.floor(cols)
    wr, wc = rows - row_low, cols - col_low
    base = (
        np.arange(n)[:, None] * width**2
        + (row_low.astype(np.int64) + 1) * width
        + (col_low.astype(np.int64) + 1)
    )
    return np.asarray(
        flat[base] * (1 - wr) * (1 - wc)
        + flat[base + width] * wr * (1 - wc)
        + flat[base + 1] * (1 - wr) * wc
        + flat[base + width + 1] * wr * wc,
        dtype=np.float64,
    )


def natural_variation(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    """A new sample of the same digit: handwriting jitter, ink gain ±10 %, sensor noise σ = 0.03.

    The background is cleaned (values < 0.03 → 0), as capture pipelines threshold it.
    """
    jittered = handwriting_jitter(images, rng)
    gain = rng.uniform(0.85, 1.1, size=(len(images), 1))
    noisy = jittered * gain + rng.normal(0.0, 0.03, size=images.shape)
    noisy[noisy < 0.03] = 0.0
    return np.clip(noisy, 0.0, 1.0)


def scanner_drift(images: FloatArray, severity: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Blend towards a low-contrast, grey-background, noisy capture; `severity` in [0, 1] per row.

    At severity 1: contrast × 0.6, background +0.15, extra noise σ = 0.06. The digits stay
    readable to a human, but the model's confidence and its input statistics both move.
    """
    s = np.clip(severity, 0.0, 1.0)[:, None]
    shifted = images * (1.0 - 0.4 * s) + 0.15 * s + rng.normal(0.0, 1.0, images.shape) * 0.06 * s
    return np.clip(shifted, 0.0, 1.0)


def _grid(images: FloatArray) -> FloatArray:
    return images.reshape(-1, _SIDE, _SIDE)


def _flat(grid: FloatArray) -> FloatArray:
    return np.ascontiguousarray(grid.reshape(-1, _SIDE * _SIDE))


def inverted(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    return 1.0 - images


def rotated(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Each digit turned by 90, 180 or 270 degrees."""
    turns = rng.integers(1, 4, size=len(images))
    grid = _grid(images).copy()
    for k in (1, 2, 3):
        grid[turns == k] = np.rot90(grid[turns == k], k=k, axes=(1, 2))
    return _flat(grid)


def mirrored(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    return _flat(_grid(images)[:, :, ::-1])


def blended(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Two different digits superimposed (mixup with a random partner)."""
    partners = images[rng.permutation(len(images))]
    weight = rng.uniform(0.35, 0.65, size=(len(images), 1))
    return weight * images + (1.0 - weight) * partners


def zoomed(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    """A 4×4 corner of the digit blown up to 8×8: a fragment, as a crop of a larger scene."""
    if len(images) == 0:
        return images.copy()
    grid = _grid(images)
    corners = rng.integers(0, 5, size=(len(images), 2))
    crops = np.stack([grid[i, r : r + 4, c : c + 4] for i, (r, c) in enumerate(corners)])
    return _flat(crops.repeat(2, axis=1).repeat(2, axis=2))


def shifted(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    """The digit moved 3 pixels sideways (part of it leaves the frame)."""
    source = _grid(images)
    grid = np.zeros_like(source)
    right = rng.random(len(images)) < 0.5
    grid[right, :, 3:] = source[right, :, :-3]
    grid[~right, :, :-3] = source[~right, :, 3:]
    return _flat(grid)


OOD_TRANSFORMS: Final[dict[str, Callable[[FloatArray, np.random.Generator], FloatArray]]] = {
    "inverted": inverted,
    "rotated": rotated,
    "mirrored": mirrored,
    "blended": blended,
    "zoomed": zoomed,
    "shifted": shifted,
}


def natural_ood(images: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Each row through one out-of-distribution transform, picked uniformly at random."""
    names = list(OOD_TRANSFORMS)
    picks = rng.integers(0, len(names), size=len(images))
    out = np.empty_like(images)
    for index, name in enumerate(names):
        rows = picks == index
        if rows.any():
            out[rows] = OOD_TRANSFORMS[name](images[rows], rng)
    return natural_variation(out, rng)
