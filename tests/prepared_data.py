"""Small datasets in the prepared layout (``npy/<id>_image|label.npy`` and
``split_txts/<split>.txt``) for the tests that train: noisy bright spheres whose
labels are nested shells, so that a few iterations already learn something."""
from __future__ import annotations

import numpy as np

# Split name -> number of cases, in order; the last split takes what is left.
DEFAULT_SPLITS = {"labeled": 2, "unlabeled": 4, "eval": 2, "test": None}


def write_spheres(root, n=10, size=20, seed=0, radii=(5,), margin=7, splits=None):
    """Case ``i`` has a sphere centred at least ``margin`` voxels from the border;
    label k marks voxels within ``radii[k-1]`` (radii from the largest down), and
    the image is ``100 * label`` plus Gaussian noise of sd 30.

    ``splits`` maps split names to case counts taken in order (``None``: the rest);
    a name mapped to another name's string reuses that split's cases.
    """
    rng = np.random.default_rng(seed)
    (root / "npy").mkdir(parents=True)
    (root / "split_txts").mkdir()
    ids = [f"case{i:02d}" for i in range(n)]
    z, y, x = np.mgrid[:size, :size, :size]
    for cid in ids:
        c = rng.integers(margin, size - margin, 3)
        r2 = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2
        label = sum((r2 < r * r).astype(np.uint8) for r in radii)
        image = (label * 100.0 + rng.normal(0, 30, label.shape)).astype(np.float32)
        np.save(root / "npy" / f"{cid}_image.npy", image)
        np.save(root / "npy" / f"{cid}_label.npy", label)
    parts, start = {}, 0
    for name, count in (splits or DEFAULT_SPLITS).items():
        if isinstance(count, str):
            parts[name] = parts[count]
            continue
        stop = n if count is None else start + count
        parts[name], start = ids[start:stop], stop
    for name, part in parts.items():
        (root / "split_txts" / f"{name}.txt").write_text("".join(i + "\n" for i in part))
    return root
