#!/usr/bin/env python
"""Save a PNG of the search page (tools/search_app.py) with headless Chromium.

    python tools/search_app.py --index DIR &
    python tools/screenshot_search_app.py \
        --url "http://127.0.0.1:7860/?q=a+woman+in+a+red+coat&k=8" --out docs/search_app.png

The page runs the search in its URL on load; ``--wait-ms`` of virtual time lets the search and
the thumbnails finish before the capture. Needs a Chromium binary (Debian: ``apt-get install
chromium``; ``--chromium PATH`` or ``$CHROMIUM`` for another one). Not part of the tests.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium(explicit=None):
    """Path of the Chromium binary: ``explicit``, ``$CHROMIUM``, else the first one on PATH."""
    for name in (explicit, os.environ.get("CHROMIUM")):
        if name:
            path = shutil.which(name)
            if path is None:
                sys.exit(f"error: Chromium {name!r} is not an executable (--chromium / $CHROMIUM)")
            return path
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    sys.exit(
        "error: no Chromium found on PATH (tried " + ", ".join(CANDIDATES) + "); install it "
        "(Debian: apt-get install chromium) or pass --chromium PATH"
    )


def reduce_colours(path, colours):
    """Rewrite the PNG ``path`` with a ``colours``-entry palette (a page and thumbnails need few;
    the file shrinks by about half)."""
    from PIL import Image

    with Image.open(path) as img:
        reduced = img.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    reduced.save(path, optimize=True)


def screenshot(
    url, out, width=1280, height=900, wait_ms=5000, colours=256, chromium=None, timeout=120
):
    """Capture ``url`` at ``width`` x ``height`` into the PNG ``out``; returns its size in bytes.

    ``colours`` (2-256) reduces the PNG to a palette of that many colours; 0 keeps it as captured.
    """
    binary = find_chromium(chromium)
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # A throwaway profile: nothing is read from or left in the user's own.
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            binary,
            "--headless",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out}",
            url,
        ]
        # Chromium's sandbox refuses to start as root (containers, CI).
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")
        if os.path.exists(out):
            os.remove(out)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            sys.exit(f"error: Chromium did not finish within {timeout} s ({url})")
    if not os.path.isfile(out):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        sys.exit(
            f"error: Chromium wrote no screenshot (exit {proc.returncode}): " + " | ".join(tail)
        )
    if colours:
        reduce_colours(out, colours)
    return os.path.getsize(out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="page URL, e.g. http://127.0.0.1:7860/?q=...")
    parser.add_argument("--out", required=True, help="PNG to write, e.g. docs/search_app.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument(
        "--wait-ms", type=int, default=5000, help="virtual time for the search (default 5000)"
    )
    parser.add_argument(
        "--colours",
        type=int,
        default=256,
        help="palette size of the PNG, 2-256 (default 256); 0 keeps every colour",
    )
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: on PATH)")
    args = parser.parse_args(argv)
    if args.colours and not 2 <= args.colours <= 256:
        parser.error(f"--colours must be 0 or from 2 to 256, got {args.colours}")
    size = screenshot(
        args.url, args.out, args.width, args.height, args.wait_ms, args.colours, args.chromium
    )
    print(f"{args.out}: {size / 1024:.0f} KB, {args.width}x{args.height}")


if __name__ == "__main__":
    main()
