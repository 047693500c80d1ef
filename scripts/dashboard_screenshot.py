#!/usr/bin/env python3
"""Save a PNG of a dashboard page with headless Chromium (how the README's picture is made).

    mcepl launch --inprocess --nodes 20 --rounds 60 --eval-every 5 --dashboard 8050 &
    python3 scripts/dashboard_screenshot.py http://127.0.0.1:8050/ docs/dashboard.png \
        --wait-round 40 --hover 3

Needs selenium and Debian's chromium + chromium-driver (`bash scripts/install.sh test` as root).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("out", help="PNG file to write")
    ap.add_argument("--wait-round", type=int, default=0,
                    help="wait until the page shows at least this round")
    ap.add_argument("--hover", type=int, help="hover this node (tooltip and highlighted curve)")
    ap.add_argument("--size", default="1400,1000", help="window size W,H")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--window-size={args.size}", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        d.get(args.url)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            r = d.execute_script("const e = document.querySelector('#round');"
                                 "return e && e.dataset.round ? +e.dataset.round : -1")
            if r >= args.wait_round:
                break
            time.sleep(0.5)
        else:
            print(f"error: the page did not reach round {args.wait_round}", file=sys.stderr)
            return 1
        time.sleep(1.0)
        if args.hover is not None:
            d.execute_script(f"window.mceplDashboard.cy.getElementById('n{args.hover}')"
                             ".emit('mouseover')")
            time.sleep(0.5)
        d.save_screenshot(args.out)
        print(f"wrote {args.out} (page at round {r})")
    finally:
        d.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
