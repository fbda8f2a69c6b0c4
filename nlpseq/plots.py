"""Attention heatmaps (PNG): source tokens on the x axis, output tokens on the y axis.

    python -m nlpseq.plots ckpt=best.ckpt text="Ein Mann fährt Fahrrad ." out=attn.png [beam_size=5]

or `plot_attention=attn.png` as an option of `python -m nlpseq.predict`, or from Python:
`plot_attention(predictor.predict(text, attention=True), "attn.png")`.
matplotlib (the `plot` extra) is imported only here, and draws off-screen (Agg): no display needed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from nlpseq.errors import ConfigError, NlpseqError

USAGE = 'usage: python -m nlpseq.plots ckpt=PATH text="a source sentence" out=attn.png [beam_size=N] [device=cpu]'


def plot_attention(result=None, path="attention.png", weights: Sequence[Sequence[float]] | None = None,
                   source_tokens: Sequence[str] | None = None, output_tokens: Sequence[str] | None = None,
                   title: str | None = None) -> Path:
    """Write a heatmap PNG of `result` (a Translation predicted with attention=True) or of explicit
    weights [output][source] with their tokens. Returns the path written."""
    if result is not None:
        if result.attention is None:
            raise NlpseqError("no attention to plot: predict with attention=True, and a model whose decoder "
                              "has attention")
        weights, source_tokens, output_tokens = result.attention, result.source_tokens, result.output_tokens
        title = title if title is not None else result.translation
    if weights is None or source_tokens is None or output_tokens is None:
        raise NlpseqError("plot_attention needs a Translation or weights with source and output tokens")
    rows, cols = len(output_tokens), len(source_tokens)
    if len(weights) != rows or any(len(r) != cols for r in weights):
        raise NlpseqError(f"attention shape does not match the tokens ({rows} x {cols})")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover
        raise NlpseqError("plotting needs matplotlib: pip install 'nlpseq[plot]'") from None

    fig = Figure(figsize=(max(3.0, 0.45 * cols + 1.5), max(2.5, 0.4 * rows + 1.2)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if rows and cols:
        image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
        ax.set_xticks(range(cols), labels=list(source_tokens), rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(rows), labels=list(output_tokens), fontsize=8)
    else:
        ax.text(0.5, 0.5, "(empty input: nothing to attend to)", ha="center", va="center")
        ax.set_axis_off()
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title[:80], fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def main(argv: list[str] | None = None) -> int:
    from nlpseq.predict import load, parse_args

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    try:
        args = parse_args(argv)
        # the text and paths as typed (parse_args would read e.g. `text=yes` as a YAML boolean)
        args.update({k: v for k, v in (a.split("=", 1) for a in argv) if k in ("text", "out")})
        for key in ("ckpt", "text", "out"):
            if key not in args:
                raise ConfigError(key, f"missing; {USAGE}")
        unknown = set(args) - {"ckpt", "text", "out", "beam_size", "device"}
        if unknown:
            raise ConfigError(sorted(unknown)[0], "unknown option (known: ckpt, text, out, beam_size, device)")
        predictor = load(args["ckpt"]).to(args.get("device", "cpu"))
        if predictor.task != "translation":
            raise ConfigError("ckpt", f"attention plots are for translation checkpoints, not {predictor.task}")
        result = predictor.predict(str(args["text"]), beam_size=args.get("beam_size"), attention=True)
        path = plot_attention(result, args["out"])
        print(result.translation)
        print(f"wrote {path}", file=sys.stderr)
        return 0
    except NlpseqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
