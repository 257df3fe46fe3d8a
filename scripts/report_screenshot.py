"""Screenshot an HTML report in headless Chromium (Debian's /usr/bin/chromium) through Playwright.

Usage: python scripts/report_screenshot.py REPORT.html OUT.png [--width 1100] [--height 1500]
       [--full-page]

Used by the demo (``demo-output/report.png``) and to refresh ``docs/report.png``. Needs the
``playwright`` Python package and a system Chromium; never downloads a browser.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """The system Chromium, or ``None`` when it is not installed."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path, width: int = 1100, height: int = 1500,
               full_page: bool = False) -> list[str]:
    """Open ``html`` and save a screenshot to ``png``.

    Returns:
        Console errors the page logged (empty when it rendered cleanly).

    Raises:
        RuntimeError: Chromium or Playwright is missing.
    """
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no Chromium found; install it with apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise RuntimeError("the playwright package is missing; pip install playwright") from err
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(Path(html).resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(png), full_page=full_page)
        finally:
            browser.close()
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--full-page", action="store_true")
    args = parser.parse_args()
    errors = screenshot(args.html, args.png, args.width, args.height, args.full_page)
    for error in errors:
        print(f"console error: {error}", file=sys.stderr)
    print(f"wrote {args.png}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
