"""Plotting helpers every chapter shares, so figures look alike across the book.

Each helper draws into a new figure and returns it; the notebook decides whether to show it.
Maps carry colour bars: a grid of maps that are compared shares one colour scale (one bar), and signed
maps use a diverging colour map centred at 0 (white is 0).
"""
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from .._optional import require

require("matplotlib", "book", "resnet_arcface.teach.viz")  # a clear message, not a bare ModuleNotFoundError
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import torch
from matplotlib.figure import Figure  # noqa: E402
from torch import nn

#: One palette for the whole book: reference/package in blue, learner/notebook in orange.
COLORS = {"package": "#1f77b4", "notebook": "#ff7f0e", "accent": "#2ca02c", "muted": "#7f7f7f"}

#: What the helpers accept as an image or a map: a tensor or an array.
ImageLike = Union[torch.Tensor, np.ndarray]


def _as_numpy(t: ImageLike) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _scale(maps: Sequence[np.ndarray], symmetric: Optional[bool] = None) -> Tuple[str, float, float]:
    """``(cmap, vmin, vmax)`` for maps drawn on one colour scale: diverging and centred at 0 when signed."""
    lo = min(float(np.nanmin(m)) for m in maps)
    hi = max(float(np.nanmax(m)) for m in maps)
    if symmetric if symmetric is not None else lo < 0:
        lim = max(abs(lo), abs(hi)) or 1.0
        return "RdBu_r", -lim, lim
    return "viridis", min(lo, 0.0), (hi if hi > min(lo, 0.0) else 1.0)


def show_images(images: Union[ImageLike, Sequence[ImageLike]], titles: Optional[Sequence[str]] = None,
                ncols: int = 8, cmap: str = "gray", size: float = 1.6, suptitle: Optional[str] = None,
                symmetric: bool = False, colorbar: bool = False, vmin: Optional[float] = None,
                vmax: Optional[float] = None) -> Figure:
    """A grid of 2-D images (``(K, H, W)`` or a list of ``(H, W)``/``(H, W, 3)``), one per axis.

    Args:
        images: The images; RGB ones (``(H, W, 3)``) are drawn as they are.
        titles: One title per image.
        ncols: Images per row.
        cmap: Colour map of one-channel images (ignored when ``symmetric``).
        size: Inches per image.
        suptitle: Title of the whole grid.
        symmetric: Signed maps (kernels, responses): one diverging scale centred at 0 for the whole grid.
        colorbar: One shared colour scale for the whole grid, with its colour bar (for maps that are
            compared). Without it and without ``vmin``/``vmax``, each image is scaled on its own.
        vmin, vmax: Explicit limits of the shared scale (e.g. the input's range ``-1, 1``).
    """
    images = [_as_numpy(im) for im in images]
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    gray = [im for im in images if im.ndim == 2]
    shared = symmetric or colorbar or vmin is not None or vmax is not None
    if shared and gray:
        auto_cmap, lo, hi = _scale(gray, symmetric=True if symmetric else None)
        cmap = auto_cmap if symmetric else cmap
        lo, hi = (lo if vmin is None else vmin), (hi if vmax is None else vmax)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + (0.8 if colorbar else 0),
                                                    (size + (0.3 if titles is not None else 0)) * nrows
                                                    + (0.4 if suptitle else 0)),
                             squeeze=False, layout="constrained")
    shown = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        im = images[i]
        if im.ndim == 3:
            ax.imshow(im)
        elif shared:
            shown = ax.imshow(im, cmap=cmap, vmin=lo, vmax=hi)
        else:
            ax.imshow(im, cmap=cmap)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if colorbar and shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.9 if nrows > 1 else 0.8, aspect=12 * nrows, pad=0.01)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _display(fig: Figure, photo: bool, max_width: int, quality: int = 75) -> None:
    """Show ``fig`` in the notebook as a compact JPEG (``photo``) or palette PNG, and close it."""
    import io

    from IPython.display import Image, display
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    dpi = min(100.0, max_width / fig.get_figwidth())  # the book's pages are narrower: nothing visible is lost
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    image = PILImage.open(buffer).convert("RGB")
    out = io.BytesIO()
    if photo:
        image.save(out, format="JPEG", quality=quality, optimize=True)
    else:  # line art has few colours: a 128-colour palette keeps it crisp at a fraction of the size
        image.quantize(colors=128).save(out, format="PNG", optimize=True)
    display(Image(data=out.getvalue(), format="jpeg" if photo else "png"))


def show_photo(fig: Figure, quality: int = 75, max_width: int = 1000) -> None:
    """Display a photograph-like figure (faces, feature maps) as a JPEG at most ``max_width`` pixels wide.

    Several times smaller than the inline backend's PNG, which keeps the committed notebooks small.
    """
    _display(fig, photo=True, max_width=max_width, quality=quality)


def show_plot(fig: Figure, max_width: int = 1000) -> None:
    """Display line art (plots, bar charts, diagrams) as a crisp palette PNG at most ``max_width`` pixels wide."""
    _display(fig, photo=False, max_width=max_width)


def shape_trace(module: nn.Module, x: torch.Tensor,
                names: Optional[Sequence[str]] = None) -> List[Tuple[str, Tuple[int, ...]]]:
    """``[(name, output shape)]`` of ``module``'s children (or just ``names``) in the order they run.

    Measured with forward hooks under ``torch.no_grad()``, so a child called twice (IRBlock's shared
    ``prelu``) appears twice.
    """
    trace: List[Tuple[str, Tuple[int, ...]]] = []
    hooks = []
    for name, child in module.named_children():
        if names is None or name in names:
            hooks.append(child.register_forward_hook(
                lambda _m, _i, out, name=name: trace.append((name, tuple(out.shape)))))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return trace


#: Short names for the layers in the architecture figure's labels.
_SHORT = {"Conv2d": "conv", "BatchNorm2d": "BN", "BatchNorm1d": "BN", "PReLU": "PReLU", "ReLU": "ReLU",
          "MaxPool2d": "maxpool", "Dropout": "Dropout", "Linear": "FC"}
#: The chapter that builds each block, for the figure's notes.
_CHAPTER = {"BasicBlock": "ch. 2", "Bottleneck": "ch. 3", "IRBlock": "ch. 2-5"}


def _layer_names(model: nn.Module, names: Sequence[str]) -> str:
    """``"conv3x3-BN-PReLU-maxpool"`` for the children ``names`` of ``model`` that exist."""
    out = []
    for name in names:
        m = getattr(model, name, None)
        if m is None:
            continue
        short = _SHORT.get(type(m).__name__, type(m).__name__)
        if isinstance(m, nn.Conv2d):
            short += "{}x{}".format(*m.kernel_size)
        out.append(short)
    return "-".join(out)


def draw_architecture(model: Optional[nn.Module] = None) -> Figure:
    """The whole network as boxes whose height follows the feature map's side and whose label gives its shape.

    Every label is read from ``model`` (default: GFPGAN's configuration, :func:`resnet_arcface18`): the
    shapes are measured by running it on one input of its own ``input_size`` and input channels, and the
    stage labels count its blocks and name their class, so the picture cannot drift from the code.
    """
    from matplotlib.patches import FancyBboxPatch

    from ..data.transforms import resolve_cfg
    from ..device import model_device
    from ..nn.model import resnet_arcface18

    model = model if model is not None else resnet_arcface18()
    channels, size = model.conv1.in_channels, resolve_cfg(model).input_size
    was_training = model.training
    device = model_device(model)
    stages = ("layer1", "layer2", "layer3", "layer4")
    measured = dict(shape_trace(model.eval(), torch.zeros(1, channels, size, size, device=device),
                                ("maxpool",) + stages + ("bn5",)))
    model.train(was_training)
    se = " + SE" if getattr(model, "use_se", False) and any(hasattr(b, "se") for b in model.layer1) else ""
    blocks = {name: (len(getattr(model, name)), type(getattr(model, name)[0]).__name__) for name in stages}
    steps = [(f"input\n{'gray' if channels == 1 else f'{channels}-channel'} face", (channels, size, size),
              COLORS["muted"], ""),
             ("stem\n" + _layer_names(model, ("conv1", "bn1", "prelu")) + "\nmaxpool", measured["maxpool"][1:],
              COLORS["package"], "ch. 1, 6")]
    steps += [(f"{name}\n{n} x {kind}{se}", measured[name][1:], COLORS["notebook"], _CHAPTER.get(kind, ""))
              for name, (n, kind) in blocks.items()]
    steps.append(("head\n" + _layer_names(model, ("bn4", "dropout")) + "\n" + _layer_names(model, ("fc5", "bn5")),
                  measured["bn5"][1:], COLORS["accent"], "ch. 6"))
    fig, ax = plt.subplots(figsize=(11, 3.6))
    x0 = 0.0
    for i, (label, shape, color, chapter) in enumerate(steps):
        side = shape[-1] if len(shape) == 3 else 4 * size / 128
        h = 0.6 + 2.2 * side / size
        ax.add_patch(FancyBboxPatch((x0, -h / 2), 1.25, h, boxstyle="round,pad=0.03", fc=color, alpha=0.85, ec="black"))
        ax.text(x0 + 0.625, h / 2 + 0.15, label, ha="center", va="bottom", fontsize=8)
        dims = " x ".join(str(d) for d in shape)
        ax.text(x0 + 0.625, 0, dims, ha="center", va="center", fontsize=8, color="white", weight="bold")
        if chapter:
            ax.text(x0 + 0.625, -h / 2 - 0.2, chapter, ha="center", va="top", fontsize=8, style="italic")
        if i < len(steps) - 1:
            ax.annotate("", (x0 + 1.55, 0), (x0 + 1.3, 0), arrowprops=dict(arrowstyle="->", lw=1.5))
        x0 += 1.6
    ax.set_xlim(-0.2, x0 - 0.2)
    ax.set_ylim(-2.2, 3.0)
    ax.axis("off")
    layers = tuple(n for n, _ in blocks.values())
    kinds = sorted({kind for _, kind in blocks.values()})
    ax.set_title(f"{type(model).__name__}({', '.join(kinds)}, layers={layers}, use_se={bool(se)}): "
                 "shapes (channels x height x width) measured by a forward pass", fontsize=10)
    fig.tight_layout()
    return fig


def flow_diagram(nodes: Sequence[Union[str, Tuple[str, str]]], skips: Sequence[Tuple[int, int, str]] = (),
                 links: Sequence[Tuple[int, int, str]] = (), title: Optional[str] = None,
                 figsize: Optional[Tuple[float, float]] = None) -> Figure:
    """A left-to-right data-flow picture: labelled boxes joined by arrows, with optional skip paths.

    Args:
        nodes: One entry per step, in order: ``(label, kind)`` or a plain label (kind ``"op"``).
            ``kind`` is ``"tensor"`` (grey: data, e.g. ``"x\\n(N, C, H, W)"``), ``"op"`` (blue: a layer),
            ``"optional"`` (blue, dashed edge: a layer that may be absent) or ``"merge"`` (a circle
            holding ``"+"`` or ``"x"``).
        skips: ``(i, j, label)`` paths drawn *above* the chain from node ``i`` into node ``j``
            (a residual connection, or the input a gate multiplies).
        links: ``(i, j, label)`` dashed lines drawn *below* the chain between nodes ``i`` and ``j``
            (two uses of one module, i.e. shared parameters).
        title: Optional title.
        figsize: Optional ``(width, height)``; by default 1.1 inch per node.
    """
    from matplotlib.patches import Circle, FancyBboxPatch

    nodes = [(n, "op") if isinstance(n, str) else tuple(n) for n in nodes]
    step, box_w, box_h = 1.0, 0.84, 0.66
    y_lo = -box_h / 2 - 0.1 - (0.45 + 0.3 * len(links) if links else 0)
    y_hi = box_h / 2 + 0.1 + (0.45 + 0.35 * len(skips) if skips else 0)
    inch = 1.1  # inches per unit of the drawing, so the figure's shape follows its content
    fig, ax = plt.subplots(figsize=figsize or (inch * (len(nodes) * step + 0.1), inch * (y_hi - y_lo) + (0.35 if title else 0)))
    face = {"tensor": "#e8e8e8", "op": "#d6e6f5", "optional": "#d6e6f5", "merge": "white"}
    for i, (label, kind) in enumerate(nodes):
        x = i * step
        if kind == "merge":
            ax.add_patch(Circle((x, 0), 0.2, fc="white", ec="black", lw=1.3, zorder=3))
            ax.text(x, 0, label.replace("x", "\u00d7"), ha="center", va="center", fontsize=15, zorder=4)
        else:
            ax.add_patch(FancyBboxPatch((x - box_w / 2, -box_h / 2), box_w, box_h, boxstyle="round,pad=0.02",
                                        fc=face.get(kind, face["op"]), ec="black", lw=1.0, zorder=3,
                                        ls="--" if kind == "optional" else "-"))
            ax.text(x, 0, label, ha="center", va="center", fontsize=9, zorder=4, linespacing=1.25)
        if i:
            gap_from = 0.2 if nodes[i - 1][1] == "merge" else box_w / 2 + 0.02
            gap_to = 0.2 if kind == "merge" else box_w / 2 + 0.02
            ax.annotate("", (x - gap_to, 0), (x - step + gap_from, 0),
                        arrowprops=dict(arrowstyle="->", lw=1.2, color="black"), zorder=2)
    arrow = dict(arrowstyle="->", lw=1.4, color=COLORS["accent"])
    for k, (i, j, label) in enumerate(skips):
        y = box_h / 2 + 0.35 + 0.35 * k
        top_j = 0.2 if nodes[j][1] == "merge" else box_h / 2
        ax.plot([i * step, i * step, j * step], [box_h / 2, y, y], color=COLORS["accent"], lw=1.4, zorder=1)
        ax.annotate("", (j * step, top_j), (j * step, y), arrowprops=arrow, zorder=1)
        ax.text((i + j) / 2 * step, y + 0.06, label, ha="center", va="bottom", fontsize=9, color=COLORS["accent"])
    for k, (i, j, label) in enumerate(links):
        y = -box_h / 2 - 0.3 - 0.3 * k
        ax.plot([i * step, i * step, j * step, j * step], [-box_h / 2, y, y, -box_h / 2], ls="--", lw=1.2,
                color=COLORS["notebook"], zorder=1)
        ax.text((i + j) / 2 * step, y - 0.05, label, ha="center", va="top", fontsize=9, color=COLORS["notebook"])
    ax.set_xlim(-step / 2 - 0.05, (len(nodes) - 0.5) * step + 0.05)
    ax.set_ylim(y_lo, y_hi)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=(1 - 0.35 / fig.get_figheight()) if title else 1)
    return fig


def grouped_bars(labels: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str,
                 title: Optional[str] = None, log: bool = False, annotate: bool = True) -> Figure:
    """Bars for several named series side by side per label, e.g. ``{"convolutions": [...], "SE": [...]}``.

    Values are written on the bars; ``log=True`` uses a logarithmic axis for values that span decades.
    """
    names = list(series)
    palette = [COLORS["package"], COLORS["notebook"], COLORS["accent"], COLORS["muted"]]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(labels) + 1), 3.4))
    for k, name in enumerate(names):
        xs = np.arange(len(labels)) + (k - (len(names) - 1) / 2) * width
        bars = ax.bar(xs, series[name], width, label=name, color=palette[k % len(palette)])
        if annotate:
            for bar, v in zip(bars, series[name]):
                ax.annotate(f"{v:,.0f}" if float(v).is_integer() else f"{v:.3g}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                            fontsize=7)
    ax.set_xticks(range(len(labels)), labels)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def feature_map_rows(rows: Mapping[str, ImageLike], n: int = 8, size: float = 1.1, title: Optional[str] = None,
                     share_scale: bool = False, channels: Optional[Sequence[int]] = None,
                     col_titles: Optional[Sequence[str]] = None, aligned: bool = True) -> Figure:
    """Several feature maps as rows of ``n`` of their channels, each row labelled with its name and shape.

    Every row has a colour bar. Signed maps are drawn with a diverging colour map centred at 0 (white is 0);
    non-negative ones (after a ReLU) with viridis from 0.

    Args:
        rows: Mapping of row name to a feature map ``(C, H, W)`` or ``(1, C, H, W)``.
        n: Channels shown per row (the first ``n``, unless ``channels`` says which).
        share_scale: If True, the whole grid shares one colour scale and one colour bar (to compare a
            channel before and after an operation); otherwise each row has its own scale and bar.
        channels: Channel indices to show, the same for every row (overrides ``n``).
        col_titles: Titles above the columns (default ``"ch 0"``, ``"ch 1"``, ...).
        aligned: True when channel ``k`` means the same in every row (e.g. ``x``, ``F(x)`` and ``F(x) + x``):
            titles go above the columns. False for maps whose channels have nothing in common (a 1x1
            convolution's outputs against its inputs): every image is titled with its row's own channel.
    """
    arrays = {name: _as_numpy(m) for name, m in rows.items()}
    maps = {name: (a[0] if a.ndim == 4 else a) for name, a in arrays.items()}
    channels = list(channels) if channels is not None else list(range(n))
    n = len(channels)
    shown = {name: [m[c] for c in channels if c < m.shape[0]] for name, m in maps.items()}
    grid = _scale([im for ims in shown.values() for im in ims]) if share_scale else None
    per_image_titles = not aligned
    fig, axes = plt.subplots(len(maps), n, squeeze=False, layout="constrained",
                             figsize=(size * n + 2.2, (size + (0.25 if per_image_titles else 0)) * len(maps)
                                      + (0.4 if title else 0.1) + 0.2))
    for r, (name, m) in enumerate(maps.items()):
        cmap, lo, hi = grid or _scale(shown[name])
        im = None
        for k, c in enumerate(channels):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= m.shape[0]:
                ax.axis("off")
                continue
            im = ax.imshow(m[c], cmap=cmap, vmin=lo, vmax=hi)
            if r == 0 or per_image_titles:
                ax.set_title(col_titles[k] if col_titles is not None else f"ch {c}", fontsize=8)
        axes[r, 0].set_ylabel(f"{name}\n{m.shape[0]}x{m.shape[1]}x{m.shape[2]}", fontsize=8, rotation=0,
                              ha="right", va="center")
        if im is not None and not share_scale:
            fig.colorbar(im, ax=axes[r, :], fraction=0.04, pad=0.01, aspect=8)
    if share_scale and im is not None:
        fig.colorbar(im, ax=axes, fraction=0.04, pad=0.01, aspect=8 * len(maps))
    if title:
        fig.suptitle(title)
    return fig
