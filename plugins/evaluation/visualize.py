"""Pictures of ranked lists: a query caption and its top-k gallery images (or RGB + thermal pairs)."""

import textwrap

import torch
from PIL import Image, ImageDraw, ImageFont

GREEN = (40, 170, 60)
RED = (210, 40, 40)
GREY = (150, 150, 150)  # no identity to compare with


def topk_gallery(q_feats, g_feats, k=10, chunk_size=1024):
    """Indices (Q, k) of the k most similar gallery items per query, most similar first.

    q_feats (Tensor): (Q, D); g_feats (Tensor): (G, D); similarity = ``q @ g.T`` computed in
    query chunks so memory stays O(chunk x G).
    """
    k = min(k, g_feats.shape[0])
    out = []
    for start in range(0, q_feats.shape[0], chunk_size):
        sim = q_feats[start : start + chunk_size] @ g_feats.t()
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def _thumb(path, size, border, width=3):
    img = Image.open(path).convert("RGB").resize(size, Image.BICUBIC)
    framed = Image.new("RGB", (size[0] + 2 * width, size[1] + 2 * width), border)
    framed.paste(img, (width, width))
    return framed


def draw_ranked_lists(rows, path, thumb_size=(48, 96), caption_width=34):
    """Draw one row per query and save a PNG.

    Args:
        rows (list[dict]): each with ``caption`` (str), ``title`` (str, e.g. the subset),
            ``results``: list of ``(rgb_path, t_path_or_empty, correct)`` in rank order.
        path (str): output PNG path.
        thumb_size (tuple): (W, H) of each thumbnail.
        caption_width (int): characters per caption line.
    """
    font = ImageFont.load_default()
    pad, border = 6, 3
    cell_w = thumb_size[0] + 2 * border
    has_thermal = any(t for row in rows for _, t, _ in row["results"])
    cell_h = (thumb_size[1] + 2 * border) * (2 if has_thermal else 1)
    text_w = caption_width * 6 + 2 * pad
    top_k = max(len(row["results"]) for row in rows)
    row_h = max(cell_h, 14 * 9) + 2 * pad + 12
    canvas = Image.new(
        "RGB", (text_w + top_k * (cell_w + pad) + pad, row_h * len(rows) + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y0 = r * row_h + pad
        title = textwrap.wrap(row.get("title", ""), caption_width)[:2]
        lines = textwrap.wrap(row["caption"], caption_width)[: 8 - len(title)]
        for i, line in enumerate(title + lines):
            colour = (90, 90, 90) if i < len(title) else "black"
            draw.text((pad, y0 + 12 + 14 * i), line, fill=colour, font=font)
        for rank, (rgb, thermal, correct) in enumerate(row["results"]):
            x = text_w + rank * (cell_w + pad)
            colour = GREY if correct is None else (GREEN if correct else RED)
            canvas.paste(_thumb(rgb, thumb_size, colour, border), (x, y0 + 12))
            if thermal:
                canvas.paste(
                    _thumb(thermal, thumb_size, colour, border),
                    (x, y0 + 12 + thumb_size[1] + 2 * border),
                )
            draw.text((x, y0), f"{rank + 1}", fill=colour, font=font)
        draw.line([(0, (r + 1) * row_h), (canvas.width, (r + 1) * row_h)], fill=(220, 220, 220))
    canvas.save(path)
    return path
