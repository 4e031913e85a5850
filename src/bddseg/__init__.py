"""bddseg: BDD100K semantic segmentation from download to exported model."""

from bddseg._version import __version__
from bddseg.errors import BddsegError


def load_predictor(path, device: str = "cpu", **options):
    """Load a checkpoint (``.pt``) or an ONNX file (``.onnx``) for inference.

    Returns an object whose ``predict(image)`` takes a uint8 HxWx3 array (or a path)
    and returns the HxW class map (uint8, train ids 0..18). ``options``: ``tta``
    (``"flip"``, ``"flip+scales"``), ``window`` (``(h, w)`` tiles), ``keep_unknown``,
    ``precision`` (``"auto"``, ``"32-true"``, ``"bf16-mixed"``; checkpoints only).
    """
    from bddseg.predictor import load_predictor as _load

    return _load(path, device=device, **options)


__all__ = ["BddsegError", "load_predictor", "__version__"]
