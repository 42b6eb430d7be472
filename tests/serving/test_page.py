"""The review page in a real browser: Debian's chromium driven by Playwright, against serve.

Run as a script to refresh the README's screenshot through the same code path:
``python tests/serving/test_page.py docs/serve.png``.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import EXAMPLES, synthetic_image  # noqa: E402
from serve_process import Server  # noqa: E402

from smokerdet.inference import FIELDS  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ENV = "SMOKERDET_REQUIRE_BROWSER"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]


def expected_label(name: str) -> str:
    return "smoking" if name.startswith("smoking_") else "not smoking"


def drop_photos(page: Any, photos: list[Path]) -> None:
    """Drop files on the drop zone as a person dragging them from a file manager would."""
    payload = [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in photos]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: "image/jpeg" }));
            }
            return dt;
        }""",
        payload,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def wait_text(page: Any, testid: str, text: str, timeout: float = 30_000) -> None:
    """Wait until an element shows ``text`` (no string eval: the page's CSP forbids it)."""
    page.locator(f"[data-testid={testid}]", has_text=text).wait_for(timeout=timeout)


def labels(page: Any) -> dict[str, str]:
    cards = page.locator("[data-testid=card]")
    return {
        cards.nth(i).locator("[data-testid=name]").inner_text(): cards.nth(i)
        .locator("[data-testid=label]")
        .inner_text()
        for i in range(cards.count())
    }


def review_session(page: Any, url: str, tmp: Path, screenshot: Path) -> dict[str, Any]:
    """Everything a reviewer does, with checks; ends with the screenshot. Returns findings."""
    photos = sorted(EXAMPLES.glob("*.jpg"))
    page.goto(url + "/")
    page.evaluate("window.smokerdetReady")
    drop_photos(page, photos)
    wait_text(page, "summary", "12 of 12 labelled", timeout=120_000)
    cards = page.locator("[data-testid=card]")
    assert cards.count() == 12
    found = labels(page)
    assert found == {p.name: expected_label(p.name) for p in photos}

    # The threshold slider relabels live, without asking the server again.
    page.fill("[data-testid=threshold]", "1")
    assert set(labels(page).values()) == {"not smoking"}
    page.fill("[data-testid=threshold]", "0")
    assert set(labels(page).values()) == {"smoking"}
    page.focus("[data-testid=threshold]")  # keyboard: End jumps to 1
    page.keyboard.press("End")
    assert page.input_value("[data-testid=threshold]") == "1"
    model_threshold = page.evaluate("fetch('v1/model').then(r => r.json()).then(m => m.threshold)")
    page.fill("[data-testid=threshold]", f"{round(model_threshold, 2)}")
    assert labels(page) == found

    # Filter, then sort by probability.
    page.select_option("[data-testid=filter]", "smoking")
    visible = page.locator("[data-testid=card]:visible")
    assert visible.count() == 6
    assert all(
        visible.nth(i).locator("[data-testid=label]").inner_text() == "smoking" for i in range(6)
    )
    page.select_option("[data-testid=filter]", "all")
    page.select_option("[data-testid=sort]", "desc")
    probs = [
        float(t.split("=")[1]) for t in page.locator("[data-testid=probability]").all_inner_texts()
    ]
    assert probs == sorted(probs, reverse=True) and len(probs) == 12

    # The heatmap toggle, by keyboard, on the most confident card.
    toggle = cards.nth(0).locator("[data-testid=heat-toggle]")
    toggle.focus()
    page.keyboard.press("Enter")
    heat = cards.nth(0).locator("[data-testid=heatmap]")
    heat.wait_for(state="visible", timeout=60_000)
    assert toggle.get_attribute("aria-pressed") == "true"
    assert page.evaluate("(img) => img.naturalWidth", heat.element_handle()) == 250

    # Download the CSV and read it back.
    with page.expect_download() as download:
        page.click("[data-testid=csv]")
    saved = tmp / "review.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert list(rows[0]) == [*FIELDS, "reviewed"]  # the API's row, then the review
    assert {r["path"]: r["label"].replace("_", " ") for r in rows} == found
    assert all(0 <= float(r["probability"]) <= 1 for r in rows)
    assert {(r["width"], r["height"], r["familiar"]) for r in rows} == {("250", "250", "true")}

    # Review one card: correct the label of the least confident one.
    last = cards.nth(11)
    last.locator("[data-testid=review-smoking]").click()
    wait_text(page, "collected", "1 smoking")
    assert "smoking" in last.locator("[data-testid=reviewed]").inner_text()

    page.screenshot(path=str(screenshot), full_page=True)
    return {"labels": found, "csv": rows}


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


@pytest.fixture
def browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{CHROMIUM} is missing and {REQUIRE_ENV}=1: install Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def test_review_page_in_chromium(browser, tmp_path):
    collected = tmp_path / "collected"
    server = Server(tmp_path, "--model", "default", "--collect", str(collected))
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        shot = tmp_path / "page.png"
        review_session(page, server.url, tmp_path, shot)
        assert shot.stat().st_size > 10_000
        (saved,) = list((collected / "smoking").iterdir())
        assert saved.suffix == ".jpg" and len(saved.stem) == 64
        assert list((collected / "not_smoking").iterdir()) == []

        # A photo unlike the model's training photos says so on its card, and only it.
        odd = tmp_path / "odd.jpg"
        synthetic_image(1, 3, size=96).save(odd)
        drop_photos(page, [odd])
        wait_text(page, "summary", "13 of 13 labelled", timeout=60_000)
        badges = page.locator("[data-testid=familiar]:visible")
        assert badges.count() == 1 and badges.inner_text() == "unfamiliar"
        card = page.locator("[data-testid=card]", has=badges)
        assert card.locator("[data-testid=name]").inner_text() == "odd.jpg"

        # Picking files works too, and the page is readable at phone width: no sideways scroll.
        phone = browser.new_page(viewport={"width": 375, "height": 740})
        phone.goto(server.url + "/")
        phone.evaluate("window.smokerdetReady")
        phone.set_input_files("[data-testid=pick]", sorted(EXAMPLES.glob("*.jpg"))[:4])
        wait_text(phone, "summary", "4 of 4 labelled", timeout=120_000)
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        assert server.stop() == 0, server.stderr()


def test_page_asks_for_the_token_once(browser, tmp_path, trained_model):
    server = Server(tmp_path, "--model", str(trained_model), "--token", "page-token")
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.evaluate("window.smokerdetReady")
        box = page.locator("#token-box")
        box.wait_for(state="visible")
        assert "token" in page.locator("[data-testid=model]").inner_text()
        page.fill("#token", "page-token")
        page.keyboard.press("Enter")
        wait_text(page, "model", "Model tiny")
        assert box.is_hidden()
        drop_photos(page, [EXAMPLES / "smoking_0001.jpg"])
        wait_text(page, "summary", "1 of 1 labelled", timeout=60_000)
    finally:
        assert server.stop() == 0, server.stderr()


def test_an_unreadable_file_gets_a_plain_card_and_the_page_no_404(browser, tmp_path, trained_model):
    server = Server(tmp_path, "--model", str(trained_model))
    try:
        page = browser.new_page()
        missing = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(server.url + "/")
        page.evaluate("window.smokerdetReady")
        wait_text(page, "model", "Model tiny")
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"not an image")
        drop_photos(page, [broken, EXAMPLES / "smoking_0001.jpg"])
        wait_text(page, "summary", "1 of 2 labelled", timeout=60_000)
        card = page.locator("[data-testid=card]", has_text="broken.jpg")
        wait_text(page, "label", "error: ")
        card.locator("[data-testid=nopreview]").wait_for(state="visible")
        assert card.locator("img.photo").is_hidden()  # no broken-image icon
        assert card.locator("[data-testid=heat-toggle]").is_hidden()  # nothing to draw
        good = page.locator("[data-testid=card]", has_text="smoking_0001.jpg")
        assert good.locator("[data-testid=heat-toggle]").is_visible()
        assert good.locator("img.photo").is_visible()
        assert missing == []  # no favicon 404 in the console
    finally:
        assert server.stop() == 0, server.stderr()


def main(target: Path) -> None:
    """Refresh a screenshot (the README's) with the same session the test runs."""
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        os.environ["SMOKERDET_HOME"] = str(Path(tmp) / "home")
        server = Server(Path(tmp), "--model", "default", "--collect", str(Path(tmp) / "c"))
        try:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1100, "height": 800}, accept_downloads=True)
            review_session(page, server.url, Path(tmp), target)
            browser.close()
        finally:
            server.stop()
    # 256 colours keep the committed picture small; the page has few of them anyway.
    from PIL import Image

    with Image.open(target) as shot:
        small = shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(target, optimize=True)
    print(target)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/serve.png"))
