"""Optional dependencies: the core (the network, training, verification, deployment) needs only torch and
numpy; the rest comes with the package's extras, and a missing one is named with the command that installs it.

The extras (``pyproject.toml``): ``data`` (sample and real faces, folders of photographs, the progress bar),
``book`` (figures, summaries, coursework; includes ``data``), ``fast`` (ONNX Runtime) and ``all``.
"""
import importlib
from types import ModuleType

#: The distribution to install for an import name, where the two differ.
DISTRIBUTIONS = {"PIL": "Pillow", "skimage": "scikit-image", "sklearn": "scikit-learn", "yaml": "PyYAML"}


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import the optional ``module``, or explain which extra installs it.

    Args:
        module: What to import, e.g. ``"PIL.Image"`` or ``"matplotlib.pyplot"``.
        extra: The extra of ``resnet-arcface`` that brings it: ``"data"``, ``"book"`` or ``"fast"``.
        needed_by: Who needs it, for the message (e.g. ``"read_image_folder"``).

    Returns:
        The imported module.

    Raises:
        ImportError: ``module``'s library is not installed; the message names the extra to install. (A library
            that is installed but fails to import, e.g. because one of *its* dependencies is missing, raises
            its own error unchanged: that is a broken installation, not a missing extra.)
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is None or err.name.split(".")[0] != top:
            raise
        raise ImportError(f"{needed_by} needs {DISTRIBUTIONS.get(top, top)}, which is not installed; install it "
                          f"with: pip install \"resnet-arcface[{extra}]\"", name=top) from err
