"""Plotting helpers every chapter shares, so figures look alike across the book.

Each helper draws into a new figure and returns it; the notebook decides whether to show it.
"""
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

#: One palette for the whole book: reference/package in blue, learner/notebook in orange.
COLORS = {"package": "#1f77b4", "notebook": "#ff7f0e", "accent": "#2ca02c", "muted": "#7f7f7f"}


def _as_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def show_images(images, titles: Optional[Sequence[str]] = None, ncols: int = 8, cmap: str = "gray",
                size: float = 1.6, suptitle: Optional[str] = None, symmetric: bool = False):
    """A grid of 2-D images (``(K, H, W)`` or a list of ``(H, W)``/``(H, W, 3)``), one per axis.

    ``symmetric=True`` centres the colour map on 0 (for signed maps such as kernels).
    """
    images = [_as_numpy(im) for im in images]
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        im = images[i]
        if symmetric:
            lim = float(np.abs(im).max()) or 1.0
            ax.imshow(im, cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:
            ax.imshow(im, cmap=None if im.ndim == 3 else cmap)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_feature_maps(fmap: torch.Tensor, n: int = 16, ncols: int = 8, title: Optional[str] = None):
    """The first ``n`` channels of one feature map ``(C, H, W)`` (or ``(1, C, H, W)``)."""
    fmap = fmap[0] if fmap.dim() == 4 else fmap
    n = min(n, fmap.shape[0])
    return show_images(fmap[:n], [f"ch {i}" for i in range(n)], ncols=ncols, cmap="viridis",
                       suptitle=title or f"{n} of {fmap.shape[0]} channels, {fmap.shape[1]}x{fmap.shape[2]}")


def bar_compare(labels: Sequence[str], values: Sequence[float], ylabel: str, title: Optional[str] = None,
                log: bool = False, colors: Optional[Sequence[str]] = None, annotate: bool = True):
    """A labelled bar chart (parameter budgets, multiply-adds, ...), values written on the bars."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels)), 3.2))
    bars = ax.bar(labels, values, color=colors or COLORS["package"])
    if log:
        ax.set_yscale("log")
    if annotate:
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:,.0f}" if float(v).is_integer() else f"{v:.3g}", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def heatmap(matrix, labels: Optional[Sequence[str]] = None, title: Optional[str] = None, cmap: str = "viridis",
            vmin: Optional[float] = None, vmax: Optional[float] = None, fmt: str = ".2f"):
    """A square matrix (e.g. cosine similarities) with its values written in the cells."""
    m = _as_numpy(matrix)
    fig, ax = plt.subplots(figsize=(0.55 * m.shape[1] + 2, 0.5 * m.shape[0] + 1.2))
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
    if m.shape[0] * m.shape[1] <= 144:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                    color="white" if v < (np.nanmean(m)) else "black")
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def shape_trace(module, x: torch.Tensor, names: Optional[Sequence[str]] = None):
    """``[(name, output shape)]`` of ``module``'s children (or just ``names``) in the order they run.

    Measured with forward hooks under ``torch.no_grad()``, so a child called twice (IRBlock's shared
    ``prelu``) appears twice.
    """
    trace, hooks = [], []
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


def draw_architecture(model=None):
    """The whole network as boxes whose height follows the feature map's side and whose label gives its shape.

    The shapes are measured by running ``model`` (default: GFPGAN's configuration) on one input,
    so the picture cannot drift from the code.
    """
    from matplotlib.patches import FancyBboxPatch

    from .model import resnet_arcface18

    model = model or resnet_arcface18()
    was_training = model.training
    device = next(model.parameters()).device
    stages = ("maxpool", "layer1", "layer2", "layer3", "layer4", "bn5")
    measured = {name: shape[1:] for name, shape in
                shape_trace(model.eval(), torch.zeros(1, 1, 128, 128, device=device), stages)}
    model.train(was_training)
    steps = [("input\ngray face", (1, 128, 128), COLORS["muted"], ""),
             ("stem\nconv3x3-BN-PReLU\nmaxpool", measured["maxpool"], COLORS["package"], "ch. 1, 6"),
             ("layer1\n2 x IRBlock", measured["layer1"], COLORS["notebook"], "ch. 2-5"),
             ("layer2\n2 x IRBlock", measured["layer2"], COLORS["notebook"], "ch. 2-5"),
             ("layer3\n2 x IRBlock", measured["layer3"], COLORS["notebook"], "ch. 2-5"),
             ("layer4\n2 x IRBlock", measured["layer4"], COLORS["notebook"], "ch. 2-5"),
             ("head\nBN-Dropout\nFC-BN", measured["bn5"], COLORS["accent"], "ch. 6")]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    x0 = 0.0
    for i, (label, shape, color, chapter) in enumerate(steps):
        side = shape[-1] if len(shape) == 3 else 4
        h = 0.6 + 2.2 * side / 128
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
    ax.set_title("ResNetArcFace (GFPGAN's configuration): shapes are (channels x height x width), measured by a forward pass")
    fig.tight_layout()
    return fig


def flow_diagram(nodes, skips=(), links=(), title: Optional[str] = None, figsize=None):
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


def grouped_bars(labels: Sequence[str], series, ylabel: str, title: Optional[str] = None, log: bool = False,
                 annotate: bool = True):
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


def feature_map_rows(rows, n: int = 8, size: float = 1.1, title: Optional[str] = None, share_scale: bool = False,
                     channels: Optional[Sequence[int]] = None, col_titles: Optional[Sequence[str]] = None):
    """Several feature maps as rows of ``n`` of their channels, each row labelled with its name and shape.

    Args:
        rows: Mapping of row name to a feature map ``(C, H, W)`` or ``(1, C, H, W)``.
        n: Channels shown per row (the first ``n``, unless ``channels`` says which).
        share_scale: If True, all images in a column share one colour scale (to compare a channel
            before and after an operation); otherwise each image is scaled on its own.
        channels: Channel indices to show, the same for every row (overrides ``n``).
        col_titles: Titles above the columns (default ``"ch 0"``, ``"ch 1"``, ...).
    """
    maps = {name: (_as_numpy(m[0]) if m.dim() == 4 else _as_numpy(m)) for name, m in rows.items()}
    channels = list(channels) if channels is not None else list(range(n))
    n = len(channels)
    fig, axes = plt.subplots(len(maps), n, figsize=(size * n + 1.2, size * len(maps) + (0.4 if title else 0.1)),
                             squeeze=False)
    for r, (name, m) in enumerate(maps.items()):
        for k, c in enumerate(channels):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= m.shape[0]:
                ax.axis("off")
                continue
            if share_scale:
                col = [mm[c] for mm in maps.values() if c < mm.shape[0]]
                ax.imshow(m[c], cmap="viridis", vmin=min(x.min() for x in col), vmax=max(x.max() for x in col))
            else:
                ax.imshow(m[c], cmap="viridis")
            if r == 0:
                ax.set_title(col_titles[k] if col_titles is not None else f"ch {c}", fontsize=8)
        axes[r, 0].set_ylabel(f"{name}\n{m.shape[0]}x{m.shape[1]}x{m.shape[2]}", fontsize=8, rotation=0,
                              ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
