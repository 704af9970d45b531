"""Draw docs/stages.png, the README's picture of the pipeline, from the stage registry.

    .venv/bin/python scripts/stage_diagram.py [--out docs/stages.png]

Each box is a registered stage in pipeline order; each arrow is an input it reads (the
registry's ``inputs``, less those implied through another stage), so the picture changes when
the registry does. Trained policies are drawn in a darker colour.
"""

from __future__ import annotations

import argparse

from taosr.stages.registry import stages


def direct_inputs(specs) -> dict[str, set[str]]:
    """Each stage's inputs less those it also reaches through another input (the transitive
    reduction), so the picture shows the chain rather than every read."""
    reads = {s.name: set(s.inputs) for s in specs}

    def reachable(name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(reads[name])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(reads[current])
        return seen

    return {
        name: {i for i in inputs if not any(i in reachable(other) for other in inputs - {i})}
        for name, inputs in reads.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/stages.png", help="PNG file to write")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(stages())
    # Two rows: the data and training stages, then what reads the trained policies.
    top = [s for s in specs if not s.reads_policies and s.name != "serve"]
    bottom = [s for s in specs if s not in top]
    where = {s.name: (i * 1.6, 1.0) for i, s in enumerate(top)}
    offset = (len(top) - len(bottom)) * 1.6
    where.update({s.name: (offset + i * 1.6, 0.0) for i, s in enumerate(bottom)})
    fig, ax = plt.subplots(figsize=(len(top) * 1.6 + 0.4, 2.6))
    for spec in specs:
        x, y = where[spec.name]
        colour = "#35618f" if spec.policy_title else "#9db7d5"
        ax.add_patch(plt.Rectangle((x - 0.6, y - 0.22), 1.2, 0.44, color=colour, zorder=2))
        ax.text(
            x,
            y,
            spec.name,
            ha="center",
            va="center",
            zorder=3,
            fontsize=10,
            color="white" if spec.policy_title else "black",
        )
    edges = direct_inputs(specs)
    for spec in specs:
        for source in sorted(edges[spec.name]):
            (x0, y0), (x1, y1) = where[source], where[spec.name]
            ax.annotate(
                "",
                xy=(x1 - 0.6 if y0 == y1 else x1, y1 + (0.22 if y1 < y0 else 0)),
                xytext=(x0 + 0.6 if y0 == y1 else x0, y0 - (0.22 if y1 < y0 else 0)),
                arrowprops={
                    "arrowstyle": "->",
                    "color": "#555555",
                    "lw": 0.8,
                    "connectionstyle": "arc3,rad=-0.25" if y0 == y1 and x1 - x0 > 2 else "arc3",
                },
                zorder=1,
            )
    ax.set_xlim(-0.8, max(x for x, _ in where.values()) + 0.8)
    ax.set_ylim(-0.4, 1.9)
    ax.axis("off")
    ax.set_title("taosr's stages (dark: trains a policy; arrows: what each stage reads)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
