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
