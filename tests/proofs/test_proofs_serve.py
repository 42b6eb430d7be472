"""Proofs for serve's promises that a plausible bug would break: the token compared whole,
the threshold taken as sent, no local path in /v1/model, the chosen default model, and
CSV cells a spreadsheet cannot evaluate (predict --csv and the page's download)."""

from __future__ import annotations

import csv
import http.client
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import synthetic_image

# the page test's browser fixtures and the serve test's photo helper
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from serve_process import Server  # noqa: E402
from test_page import browser, drop_photos, wait_text  # noqa: E402,F401
from test_serve import jpeg  # noqa: E402

from smokerdet.cli import app  # noqa: E402

TOKEN = "proof-token-123"
PHOTO = jpeg(synthetic_image(1, 7, size=32))
RAW = {"Content-Type": "image/jpeg"}
#: File names a spreadsheet would run as formulas if a CSV cell began with them (a file on
#: disk cannot hold a "/": the page's test also drops one named with the whole URL).
HOSTILE_NAMES = ('=HYPERLINK("x","y").jpg', "+cmd.jpg", "-2+3.jpg", "@SUM(A1).jpg")
URL_NAME = '=HYPERLINK("http://x","y").jpg'


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("proof-serve"), "--model", str(trained_model))
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def with_token(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("proof-token")
    server = Server(tmp, "--model", str(trained_model), "--token", TOKEN)
    yield server
    assert server.stop() == 0, server.stderr()


def _raw_client(server: Server, authorization: str | None) -> httpx.Client:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.Client(base_url=server.url, headers=headers, timeout=120, trust_env=False)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer ",  # empty token
        "Bearer",  # no token at all after the scheme
        f"Bearer {TOKEN[:-1]}",  # a prefix of the token
        f"Bearer {TOKEN[:1]}",
        f"Bearer {TOKEN}{TOKEN}",
        f"Basic {TOKEN}",  # the right secret under another scheme
        TOKEN,
    ],
)
def test_only_the_whole_token_opens_the_api(with_token, authorization):
    # http.client sends the header byte for byte (httpx refuses a trailing space)
    host, port = with_token.url.removeprefix("http://").split(":")
    for method, path in (("POST", "/v1/predict"), ("GET", "/v1/model"), ("GET", "/v1/review")):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            conn.request(method, path, body=PHOTO, headers={**RAW, "Authorization": authorization})
            r = conn.getresponse()
            status, body = r.status, json.loads(r.read())
        finally:
            conn.close()
        assert status == 401, (authorization, path, body)
        assert "missing or wrong token" in body["error"]


def test_the_whole_token_opens_the_api_in_any_scheme_case(with_token):
    for scheme in ("Bearer", "bearer", "BEARER"):
        with _raw_client(with_token, f"{scheme} {TOKEN}") as c:
            assert c.post("/v1/predict", content=PHOTO, headers=RAW).status_code == 200


@pytest.mark.parametrize("cut", [0.0, 1.0])
def test_threshold_zero_and_one_are_used_as_sent(guarded, cut):
    with _raw_client(guarded, None) as c:
        r = c.post(f"/v1/predict?threshold={cut:g}", content=PHOTO, headers=RAW)
        assert r.status_code == 200, r.text
        body = r.json()
        (row,) = body["results"]
    assert body["threshold"] == cut and row["threshold"] == cut
    # p >= 0 always holds, p >= 1 never does for a sigmoid of a finite logit
    assert row["label"] == ("smoking" if cut == 0.0 else "not_smoking")


@pytest.mark.parametrize("cut", ["-0.01", "1.01", "nan", "x"])
def test_threshold_out_of_range_is_422_naming_it(guarded, cut):
    with _raw_client(guarded, None) as c:
        r = c.post(f"/v1/predict?threshold={cut}", content=PHOTO, headers=RAW)
    assert r.status_code == 422 and "threshold" in r.json()["error"]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_model_endpoint_carries_no_local_path(guarded, trained_model, tmp_path):
    with _raw_client(guarded, None) as c:
        info = c.get("/v1/model").json()
    local = [str(trained_model), str(trained_model.parent.parent), str(Path.home()), "/tmp/"]
    leaks = [s for s in _strings(info) if any(p in s for p in local)]
    assert leaks == [], leaks
    # the metadata on disk does carry local paths: the endpoint removed them
    on_disk = (trained_model / "model.json").read_text()
    assert str(trained_model.parent.parent.parent) in on_disk
    assert info["arch"] == "resnet10t" and "threshold" in info


def test_serve_without_model_answers_with_the_chosen_default(runner, model_copy, tmp_path):
    r = runner.invoke(app, ["models", "default", "tiny"])
    assert r.exit_code == 0, r.output
    server = Server(tmp_path)
    try:
        with _raw_client(server, None) as c:
            assert c.get("/readyz").json()["model"] == "tiny"
            assert c.get("/v1/model").json()["arch"] == "resnet10t"
            assert c.post("/v1/predict", content=PHOTO, headers=RAW).json()["model"] == "tiny"
        assert "Serving model tiny" in server.stderr()
    finally:
        assert server.stop() == 0, server.stderr()


def _hostile_photos(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, name in enumerate(HOSTILE_NAMES):
        synthetic_image(i % 2, i, size=32).save(folder / name)
        paths.append(folder / name)
    return paths


def _assert_neutral(cells: list[str], names: tuple[str, ...] = HOSTILE_NAMES) -> None:
    """No cell starts a formula; each hostile name is there, as text after a ``'``."""
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    for name in names:
        assert any(cell.startswith("'" + name) for cell in cells), (name, cells)


def test_predict_csv_cells_cannot_start_a_formula(runner, trained_model, tmp_path, monkeypatch):
    _hostile_photos(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")  # relative paths: the cell is the bare file name
    out = tmp_path / "rows.csv"
    args = ["predict", "--model", str(trained_model), "--workers", "0"]
    names = ["--", *HOSTILE_NAMES]  # "-2+3.jpg" is a file, not an option
    r = runner.invoke(app, [*args, "--csv", str(out), *names])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == len(HOSTILE_NAMES) and all(row["label"] for row in rows)
    _assert_neutral([row["path"] for row in rows])
    # JSON stays the data: the name as it is
    r = runner.invoke(app, [*args, "--json", *names])
    assert {json.loads(line)["path"] for line in r.stdout.splitlines()} == set(HOSTILE_NAMES)


def test_page_csv_download_cells_cannot_start_a_formula(browser, guarded, tmp_path):  # noqa: F811
    photos = _hostile_photos(tmp_path / "in")
    url_named = tmp_path / "url" / "photo.jpg"
    url_named.parent.mkdir()
    url_named.write_bytes(PHOTO)
    page = browser.new_page(accept_downloads=True)
    page.goto(guarded.url + "/")
    page.evaluate("window.smokerdetReady")
    drop_photos(page, photos)
    page.evaluate(
        """([name, bytes]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, { type: "image/jpeg" }));
            document.querySelector("#drop").dispatchEvent(
                new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        [URL_NAME, list(PHOTO)],
    )
    n = len(photos) + 1
    wait_text(page, "summary", f"{n} of {n} labelled", timeout=60_000)
    with page.expect_download() as download:
        page.click("[data-testid=csv]")
    saved = tmp_path / "review.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert len(rows) == n
    # the browser sends '"' as %22, and serve keeps a name's last "/" part: "=HYPERLINK(" stays
    _assert_neutral([row["path"] for row in rows], ("=HYPERLINK(", *HOSTILE_NAMES[1:]))
    assert all(0 <= float(row["probability"]) <= 1 for row in rows)  # numbers stay numbers
