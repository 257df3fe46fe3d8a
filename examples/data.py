"""Data the examples share, all shipped with scikit-learn and scikit-image (nothing downloaded):
handwritten digits at MNIST's 28x28, photographs cut to the same size, and an output folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def digits(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as uint8 ``[N, size, size]`` and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    small = (data.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.BILINEAR))
                       for i in small])
    return images, data.target


def photographs(count: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """``count`` grayscale crops of scikit-image's sample photographs, uint8 ``[N, size, size]``."""
    import skimage.data

    sources = [skimage.data.camera(), skimage.data.coins(), skimage.data.moon(),
               skimage.data.page(), skimage.data.grass(), skimage.data.brick()]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        image = sources[i % len(sources)]
        top, left = (int(rng.integers(0, d - 96)) for d in image.shape[:2])
        crop = Image.fromarray(image[top:top + 96, left:left + 96]).resize((size, size))
        crops.append(np.asarray(crop))
    return np.stack(crops)


def output_folder() -> Path:
    """Where an example writes its figures: its first argument, else ``examples/output``."""
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "output"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
