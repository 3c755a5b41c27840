"""genericssl: the Aggregating & Decoupling (A&D) framework for semi-supervised
volumetric medical image segmentation (Wang & Li, NeurIPS 2023)."""
__version__ = "0.1.0"

__all__ = ["DiffVNet", "__version__"]


def __getattr__(name):
    # Lazy, so that `import genericssl` (and the CLI's --help) does not pay for torch.
    if name == "DiffVNet":
        from .models.diff_vnet import DiffVNet
        return DiffVNet
    raise AttributeError(name)
