"""PNG plots of table rows (``srs_jax.experiments.tables``): memory / step time against catalog
size (one line per loss, batch size and sequence length), quality against memory, and the training
curves of run folders (loss and validation metric per epoch; one run is enough). matplotlib is optional (the ``report`` extra) and
imported only here, with the Agg backend (no display needed)."""

from __future__ import annotations

import os
from typing import Callable

from srs_jax.experiments import frontier as frontier_lib

LOSS_STYLE = {"ce": ("tab:red", "o"), "ce_neg": ("tab:orange", "s"), "cce": ("tab:blue", "^"),
              "cce_neg": ("tab:green", "D")}


def pyplot():
    """``matplotlib.pyplot`` (Agg), or a one-line ImportError saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'srs-jax[report]' (or pass "
                          "--noplots for tables only)") from None
    return plt


def _style(loss: str, i: int):
    return LOSS_STYLE.get(loss, (f"C{i % 10}", "v"))


def _save(fig, path: str) -> str:
    """Writes the figure to a temporary name and renames it (no half-written PNG)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _series_key(r: dict) -> tuple:
    return (str(r["loss"]), r.get("batch_size"), r.get("max_len"))


def _series_label(key: tuple) -> str:
    loss, bs, sl = key
    return loss + (f", BS {bs}" if bs else "") + (f", SL {sl}" if sl else "")


def versus_catalog(rows: list[dict], value: Callable[[dict], float | None], ylabel: str,
                   title: str, path: str) -> str | None:
    """One line per (loss, batch size, sequence length) of ``value(row)`` against ``n_items``
    (log-log; a single run is a single marker); failed points (OOM) are drawn as crosses on the
    top edge. Returns the path, or None when no row has a value."""
    plt = pyplot()
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("n_items"):
            series.setdefault(_series_key(r), []).append(r)
    ok = [value(r) for rs in series.values() for r in rs if r.get("status") == "ok"]
    ok = [v for v in ok if v]
    if not ok:
        return None
    top = max(ok) * 2.0
    losses = list(dict.fromkeys(k[0] for k in series))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for j, (key, rs) in enumerate(sorted(series.items(), key=lambda kv: str(kv[0]))):
        color, marker = _style(key[0], losses.index(key[0]))
        label = _series_label(key)
        style = ["-", "--", ":", "-."][j % 4]
        rs = sorted(rs, key=lambda r: r["n_items"])
        pts = [(r["n_items"], value(r)) for r in rs if r.get("status") == "ok" and value(r)]
        if pts:
            ax.plot(*zip(*pts), color=color, marker=marker, linestyle=style, label=label)
        oom = [r["n_items"] for r in rs if r.get("status") == "oom"]
        if oom:
            ax.scatter(oom, [top] * len(oom), color=color, marker="x", s=70,
                       label=f"{label}: out of memory")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalog size (items)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    out = _save(fig, path)
    plt.close(fig)
    return out


def training_curves(curves: list[tuple[str, list[dict]]], path: str,
                    metric: str = "ndcg@10") -> str | None:
    """Training loss and validation ``metric`` per epoch, one line per run (``curves``: label and
    the rows of its ``metrics.jsonl``). None when no run has an epoch."""
    curves = [(label, rows) for label, rows in curves if rows]
    if not curves:
        return None
    plt = pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (label, rows) in enumerate(curves):
        epochs = [r.get("epoch") for r in rows]
        color = f"C{i % 10}"
        loss = [(e, r.get("train_loss")) for e, r in zip(epochs, rows) if r.get("train_loss") is not None]
        val = [(e, r.get("val", {}).get(metric)) for e, r in zip(epochs, rows)
               if r.get("val", {}).get(metric) is not None]
        if loss:
            ax_loss.plot(*zip(*loss), color=color, marker="o", label=label)
        if val:
            ax_val.plot(*zip(*val), color=color, marker="o", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel(f"validation {metric}")
    for ax in (ax_loss, ax_val):
        ax.grid(True, alpha=0.3)
    ax_val.legend(fontsize=7)
    fig.suptitle("training curves")
    out = _save(fig, path)
    plt.close(fig)
    return out


def quality_vs_memory(rows: list[dict], path: str, metric: str = "ndcg@10") -> str | None:
    """Scatter of ``metric`` against peak memory, one colour per loss; None if no run has both."""
    plt = pyplot()
    pts = [r for r in rows if r.get("status") == "ok" and r.get("peak_memory_gb") and
           r.get(metric) is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    losses = list(dict.fromkeys(str(r["loss"]) for r in pts))
    for i, loss in enumerate(losses):
        color, marker = _style(loss, i)
        rs = [r for r in pts if str(r["loss"]) == loss]
        ax.scatter([r["peak_memory_gb"] for r in rs], [r[metric] for r in rs], color=color,
                   marker=marker, label=loss, alpha=0.8)
    datasets = sorted({str(r["dataset"]) for r in pts})
    ax.set_xscale("log")
    ax.set_xlabel("peak memory, GB (GiB)")
    ax.set_ylabel(f"test {metric.upper().replace('@', '@')}")
    ax.set_title(f"quality vs memory ({', '.join(datasets)})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out = _save(fig, path)
    plt.close(fig)
    return out


def frontier(rows: list[dict], path: str, metric: str = "ndcg@10") -> str | None:
    """The CCE- frontier (``srs_jax.experiments.frontier``): one panel per data set, validation
    ``metric`` against training seconds per setting (``frontier.curve`` of each row), the best
    epoch marked. None if no row has a curve."""
    curves = [(r, frontier_lib.curve(r)) for r in rows]
    sets = list(dict.fromkeys(r["set"] for r, points in curves if points))
    if not sets:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.2), squeeze=False)
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    for ax, data_set in zip(axes[0], sets):
        for r, points in curves:
            if r["set"] != data_set or not points:
                continue
            color = f"C{settings.index(r['setting']) % 10}"
            ax.plot(*zip(*points), color=color, marker=".", label=r["setting"])
            best = max(points, key=lambda p: p[1])
            ax.scatter([best[0]], [best[1]], color=color, s=60, edgecolor="black", zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("training seconds (steps x step time alone on the GPU)")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(data_set)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("quality against training time (best epoch circled)")
    out = _save(fig, path)
    plt.close(fig)
    return out
