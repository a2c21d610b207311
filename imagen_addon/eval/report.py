"""`imagen eval`'s report: the prompts x seeds grid, the accuracy-vs-steps plot, the markdown table and its
section in BENCHMARKS.md. `evaluate.py` makes the results dict these read; it imports this module, so the two
names taken from it (`generate`, `SAMPLER_NAMES`) are imported where they are used."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .judge import LANDSCAPE_ATTRIBUTES, MATERIAL_ATTRIBUTES

if TYPE_CHECKING:
    from .evaluate import Setting

START, END = "<!-- eval:start -->", "<!-- eval:end -->"


# ---------------------------------------------------------------- pictures


def draw_grid(imagen, rows: list[tuple[dict, str]], args, setting: Setting):
    """Prompts x seeds: one row per prompt (its text on the left), one column per seed."""
    import textwrap  # noqa: PLC0415

    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    from .evaluate import generate  # noqa: PLC0415 (evaluate imports this module)

    cell, label_w, pad = 128, 300, 4
    font = ImageFont.load_default(size=13)
    grid = Image.new("RGB", (label_w + args.grid_seeds * (cell + pad), len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (attrs, text) in enumerate(rows):
        tiling = "xy" if attrs["kind"] == "material" else "none"
        images, *_ = generate(imagen, [text] * args.grid_seeds, [args.seed * 1000 + s for s in range(args.grid_seeds)],
                             setting, sr_steps=args.sr_steps, guidance=args.guidance, tiling=tiling, batch=args.batch)
        y = r * (cell + pad)
        draw.multiline_text((6, y + 6), "\n".join(textwrap.wrap(text, 40)), fill="black", font=font)
        for c, image in enumerate(images):
            grid.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST if image.width < cell else Image.BOX),
                       (label_w + c * (cell + pad), y))
    return grid


def plot_accuracy(results: dict, path: Path) -> None:
    """Attribute accuracy (all, landscapes, materials) against base-stage steps, one marker per sampler."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from .evaluate import SAMPLER_NAMES  # noqa: PLC0415 (evaluate imports this module)

    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=110)
    lowest = 1.0
    for key, colour, name in (("mean_accuracy", "black", "all"), ("landscape_accuracy", "tab:green", "landscapes"),
                              ("material_accuracy", "tab:blue", "materials"),
                              ("base_mean_accuracy", "tab:orange", "all, base-stage output")):
        for sampler, marker in (("ancestral", "o"), ("ddim", "s"), ("dpmpp", "^"), ("dpmpp_sde", "v")):
            rows = sorted((r["steps"], r[key]) for r in results["settings"]
                          if r["sampler"] == sampler and r[key] is not None)
            if rows:
                lowest = min(lowest, *(v for _, v in rows))
                ax.plot(*zip(*rows), marker=marker, color=colour, linestyle="-" if len(rows) > 1 else "none",
                        label=f"{SAMPLER_NAMES[sampler]}, {name}")
    if results["judge"]["real_mean_accuracy"] is not None:
        ax.axhline(results["judge"]["real_mean_accuracy"], color="gray", linestyle=":", label="procedural images")
    steps = sorted({r["steps"] for r in results["settings"]})
    bottom = max(0.0, math.floor(10 * lowest - 1) / 10)  # a tenth below the lowest point, on a tenth
    ax.set(xscale="log", xticks=steps, xticklabels=[str(v) for v in steps], ylim=(bottom, 1.02),
           xlabel="base-stage sampler steps", ylabel="attribute accuracy", title="Held-out prompt following")
    ax.minorticks_off()
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: the data stays visible
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- report


def _pct(v, digits: int = 0) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _seams(seam: dict) -> str:
    text = f"{seam['material_x']} / {seam['material_y']}"
    if seam.get("material_x_same_phase") is not None:
        text += f" ({seam['material_x_same_phase']} / {seam['material_y_same_phase']})"
    return text


def table_markdown(results: dict) -> str:
    """The report as markdown: accuracy / FD / seams / speed per setting, the seam section, the judge."""
    cols = [k for k in LANDSCAPE_ATTRIBUTES + MATERIAL_ATTRIBUTES if any(k in r["accuracy"] for r in results["settings"])]
    n = results.get("checks", {})
    head = ["setting (base stage)", *(k.replace("_", " ") + (f" ({n[k]})" if k in n else "") for k in cols),
            "mean ± s.e.", "mean at base res", "FD",
            f"material seam x / y (same {results.get('seam_period', 1)}-px phase)", "s / image"]
    lines = [_row(head), "|" + "---|" * len(head)]
    for r in results["settings"]:
        se = r.get("mean_accuracy_se")
        mean = f"**{_pct(r['mean_accuracy'])}**" + ("" if se is None else f" ± {100 * se:.0f}")
        lines.append(_row([r["label"], *(_pct(r["accuracy"].get(k)) for k in cols), mean,
                           _pct(r["base_mean_accuracy"]), r["fd"]["all"],
                           _seams(r["seam"]),
                           r["seconds_per_image"]]))
    judge, c = results["judge"], results["counts"]
    lines += [_row(["procedural images (judge check)", *(_pct(judge["real_accuracy"].get(k)) for k in cols),
                    f"**{_pct(judge['real_mean_accuracy'])}**", "", 0, "", ""]), "",
              f"{c['landscape']} landscape and {c['material']} material prompts whose attribute combinations were "
              f"held out of training (seed {results['seed']}), base-stage guidance {results['guidance_scale']}. "
              "The sampler and step count apply to the base stage; in every row the super-resolution stage runs "
              f"DPM-Solver++ with {results['sr']['steps']} steps. 'Mean at base res': the same judge on the base "
              "stage's output. FD: Fréchet distance between judge-net features of the generated images and of "
              "procedural renders of the same prompts (lower is better). Seam: mean |last - first| over mean "
              "|interior neighbour| difference, pooled over the tiled materials (target <= 1.5), then (in "
              "parentheses) against the interior neighbours at the wrap's phase of the cascade's shift grid only "
              "(see below). Column headers, in brackets: how many images score each attribute. Mean: the "
              "unweighted mean over attributes; ± one standard error from those counts, so an attribute scored on "
              "2 images weighs as much as one scored on 48 and makes the mean that much less certain."]
    s = results.get("seams", {})
    if "panorama" in s or "material_untiled_control" in s:
        lines += ["", f"Seams ({s['setting']}; target <= {s['target']}):", "",
                  f"| images | tiled | tiled, same {s.get('period', 1)}-px phase | untiled control | procedural |",
                  "|---|---|---|---|---|"]
        if "panorama" in s:
            p = s["panorama"]
            lines.append(_row([f"{p['count']} panoramas, left-right", p["tiled"], p.get("tiled_same_phase"),
                               p["untiled_control"], p["procedural"]]))
        if "material_untiled_control" in s:
            m, ref, tiled = s["material_untiled_control"], s["material_procedural"], s["material_tiled"]
            lines.append(_row([f"{m['count']} materials, x / y", f"{tiled['material_x']} / {tiled['material_y']}",
                               f"{tiled['material_x_same_phase']} / {tiled['material_y_same_phase']}",
                               f"{m['x']} / {m['y']}", f"{ref['x']} / {ref['y']}"]))
        every = results.get("seam_all_settings")
        if every:
            lines += ["", f"All {every['count']} tiled materials of every setting, pooled: x / y "
                      f"{every['material_x']} / {every['material_y']}, same phase "
                      f"{every['material_x_same_phase']} / {every['material_y_same_phase']}."]
        lines += ["", f"'Same phase': the seam set against the interior neighbours at the wrap's phase of a "
                  f"{s.get('period', 1)}-px grid only. With circular padding the cascade commutes with rolls by "
                  "that many pixels (tested), so the wrap pair is drawn exactly like those pairs, and this ratio "
                  "tends to 1 over many images. The plain ratio also depends on where pattern edges fall: a pattern "
                  "with edges on that grid gets them on the wrap as often as on any same-phase interior pair. The "
                  "procedural data keeps its grid lines half a grid step off it (`edge_offset`), so a model that "
                  "learned the data keeps them off the wrap."]
    nets = ", ".join(f"{k} {_pct(v, 1)}" for k, v in (judge.get("nets") or {}).items()
                     if k in ("pattern", "orientation", "shape"))
    lines += ["", "Judge: sky, ground, sun / moon, object colour and position, material colours and seams are "
              "measured against the spec's colours and geometry; pattern, orientation and object shape come from "
              f"small CNNs trained on procedural images (on held-out procedural images: {nets}). On procedural "
              f"renders of these prompts the judge scores {_pct(judge['real_mean_accuracy'], 1)}."]
    return "\n".join(lines) + "\n"


def write_benchmarks(path: Path, section: str) -> None:
    """Replace the text between the eval markers in `path` (append the section, or create the file)."""
    block = f"{START}\n{section.rstrip()}\n{END}"
    text = path.read_text("utf-8") if path.is_file() else ""
    if START in text and END in text.split(START, 1)[1]:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)
