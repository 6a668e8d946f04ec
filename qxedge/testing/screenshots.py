"""The console's screenshots in the docs: ``python -m qxedge.testing.screenshots [DIR]`` (default
docs/img) runs a live plant with the production day, waits for scores, a setpoint and a lock, and saves
console-plant.png, console-asset.png and console-audit.png from headless Chromium.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from qxedge.testing.configs import ROOT
from qxedge.testing.console import LivePlant, chromium, chromium_missing
from qxedge.testing.waits import wait_until_sync

TOKEN = "screenshot-token-0123456789"


def _status(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/status", timeout=10) as answer:
        doc: dict[str, object] = json.load(answer)
    return doc


def _scored_and_written(url: str) -> bool:
    assets = _status(url)["assets"]
    assert isinstance(assets, list)
    return any(a["scores"] for a in assets) and any(a["setpoint"] for a in assets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    if (why := chromium_missing()) is not None:
        print(f"screenshots: {why}", file=sys.stderr)
        return 1
    args.folder.mkdir(parents=True, exist_ok=True)
    with LivePlant(token=TOKEN, planning=True) as plant:
        if not wait_until_sync(lambda: _scored_and_written(plant.url), within_s=60):
            print("screenshots: no score or setpoint within 60 s", file=sys.stderr)
            return 1
        request = urllib.request.Request(
            plant.url + "/api/locks/line1/fan1",
            json.dumps({"locked": True, "by": "j.kim", "reason": "bearing inspection"}).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        time.sleep(12)  # the demo fault on pump3 shows in its score; the plots fill
        browser = chromium(1280, 720)
        try:
            for name, page, settle in (
                ("console-plant", "/", "#assets tbody tr"),
                ("console-asset", "/#/asset/line1/pump3", ".chart polyline"),
                ("console-audit", "/#/audit", "#audit tbody tr"),
            ):
                browser.get(plant.url + page)
                found = "return document.querySelector(arguments[0]) !== null"
                wait_until_sync(lambda: bool(browser.execute_script(found, settle)), within_s=20)  # noqa: B023
                time.sleep(1.5)  # one more live update drawn
                target = args.folder / f"{name}.png"
                browser.save_screenshot(str(target))
                print(f"screenshots: {target}")
        finally:
            browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
