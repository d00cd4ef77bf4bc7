"""The web page end to end in headless Chromium: upload, record, predict, draw.

Playwright drives the system Chromium (/usr/bin/chromium, Debian's package); the
browser Playwright would download is never used. Skipped, with the reason, where
either is missing.

The model: the real export in saved_models/kemdy when there is one, else the tiny
untrained export of test_web. The page's screenshot goes to docs/figures/web.png
(the README shows it) when it shows the real export, or when that file does not
exist yet; otherwise to the test's temporary folder, so a test run never replaces a
screenshot of real predictions with one of random weights.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
if importlib.util.find_spec("playwright") is None:
    pytest.skip("no browser driver: the playwright package is not installed (pip install playwright)",
                allow_module_level=True)

from playwright.sync_api import expect

from kemdy_tf import export
from kemdy_tf.data import synthetic
from kemdy_tf.data.kemdy20 import read_kemdy20
from kemdy_tf.web.app import Limits, create_app
from test_web import LoopbackServer, make_export

ROOT = Path(__file__).resolve().parents[1]
REAL_EXPORT = ROOT / "saved_models" / "kemdy"
SCREENSHOT = ROOT / "docs" / "figures" / "web.png"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    # A fake microphone (a beep) that needs no permission prompt, for the recorder.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
TIMEOUT_MS = 30_000


def _real_export() -> Path | None:
    try:
        return export.find_export(REAL_EXPORT)
    except export.ExportError:
        return None


def expressive_clip(root: Path) -> tuple[Path, str]:
    """A synthetic utterance labelled happy (else any emotion but neutral): its wav and Korean transcript."""
    data = synthetic.generate(root / "KEMDy20", seed=0, sessions=1, scripts=1, utterances=(4, 4))
    table, _ = read_kemdy20(data)
    for wanted in (table.emotion == "happy", table.emotion != "neutral", table.emotion.notna()):
        if wanted.any():
            row = table[wanted].iloc[0]
            return Path(row.wav_path), row.text
    raise AssertionError(f"the synthetic set in {data} has no labelled utterance")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on a loopback port, a synthetic clip and its transcript."""
    root = tmp_path_factory.mktemp("web_browser")
    real = _real_export()
    app = create_app(real or make_export(root), Limits())  # the default limits, as the screenshot shows them
    wav, transcript = expressive_clip(root)
    with LoopbackServer(app) as server:
        yield {"url": server.url, "app": app, "real": real is not None, "wav": wav, "transcript": transcript,
               "root": root}


@pytest.fixture(scope="module")
def browser():
    # The page runs under its Content-Security-Policy (no eval), so waits use Playwright's
    # locator assertions (`expect`), never string predicates (wait_for_function).
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served):
    """A fresh page on the app; after the test, no request may have left 127.0.0.1 and no script error."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, locale="ko-KR")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Chromium also logs every 4xx response as a console error; those are asserted where expected.
    page.on("console", lambda message: message.type == "error" and not message.text.startswith(
        "Failed to load resource") and errors.append(message.text))
    page.goto(served["url"] + "/")
    expect(page.locator("#model-info")).to_have_text(re.compile(r"^모델 \S+/\d+ "))  # /api/health answered
    yield page
    context.close()
    foreign = [url for url in requests if urlsplit(url).scheme in ("http", "https", "ws", "wss")
               and urlsplit(url).hostname != "127.0.0.1"]
    assert not foreign, f"the page fetched from other hosts: {foreign}"
    assert not errors, f"script errors: {errors}"


def _shown_result(page) -> dict:
    """What the page shows, read from the DOM and the canvas."""
    return page.evaluate("""() => {
        const canvas = document.getElementById('spectrogram');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const colours = new Set();
        for (let i = 0; i < pixels.length; i += 4 * 97) colours.add(pixels[i] * 65536 + pixels[i + 1] * 256 + pixels[i + 2]);
        const bars = [...document.querySelectorAll('#prob-chart rect.bar')];
        const point = document.getElementById('av-point');
        return {
            emotion: document.getElementById('emotion').dataset.emotion,
            emotionText: document.getElementById('emotion').textContent,
            bars: bars.map(b => [b.dataset.class, Number(b.dataset.probability), Number(b.getAttribute('width'))]),
            topBar: bars.filter(b => b.classList.contains('top')).map(b => b.dataset.class),
            point: point ? point.tagName : null,
            transcript: document.getElementById('transcript-used').textContent,
            spectrogramDrawn: canvas.dataset.drawn,
            spectrogramColours: colours.size,
            status: document.getElementById('status').textContent,
        };
    }""")


def test_upload_with_a_korean_transcript_shows_the_emotion_and_the_charts(page, served):
    page.set_input_files("#audio-file", str(served["wav"]))
    page.fill("#text", served["transcript"])
    assert page.inner_text("#text-count") == str(len(served["transcript"]))
    with page.expect_response(lambda r: r.url.endswith("/api/predict")) as answer:
        page.click("#predict")
    assert answer.value.status == 200
    api = answer.value.json()
    page.wait_for_selector("#results:not([hidden])")
    expect(page.locator("#spectrogram")).to_have_attribute("data-drawn", "true")

    shown = _shown_result(page)
    assert shown["emotion"] == api["emotion"] and api["emotion"] in shown["emotionText"]
    classes = list(served["app"].state.model.classes)
    assert [name for name, _, _ in shown["bars"]] == classes  # one bar per class, in the model's order
    for name, probability, width in shown["bars"]:
        assert probability == pytest.approx(api["probabilities"][name], abs=1e-6)
    widths = {name: width for name, _, width in shown["bars"]}
    assert max(widths, key=widths.get) == api["emotion"] and shown["topBar"] == [api["emotion"]]
    assert shown["point"] == "circle"  # valence known: a point on the arousal/valence plane
    assert served["transcript"] in shown["transcript"]  # Korean went through the form and back intact
    assert shown["spectrogramColours"] > 20  # the log-mel image, not an empty canvas

    page.locator("#results").scroll_into_view_if_needed()
    target = SCREENSHOT if served["real"] or not SCREENSHOT.exists() else served["root"] / "web.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


def test_recording_from_the_microphone_sends_a_wav_and_predicts_audio_only(page):
    page.click("#record")
    expect(page.locator("#record")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(1500)
    page.click("#record")
    expect(page.locator("#predict")).to_be_enabled()
    assert page.inner_text("#clip-name").startswith("recording-")
    with page.expect_response(lambda r: r.url.endswith("/api/predict")) as answer:
        page.click("#predict")
    # Accepted, so the server sniffed a WAV/FLAC/Ogg/MP3 header: the page's own WAV
    # encoder, since Chromium's MediaRecorder would have sent WebM (refused with 415).
    assert answer.value.status == 200, answer.value.text()
    api = answer.value.json()
    assert api["file"].startswith("recording-") and api["file"].endswith(".wav")
    assert 1.0 < api["duration_seconds"] < 4.0 and api["transcript_missing"]
    page.wait_for_selector("#results:not([hidden])")
    shown = _shown_result(page)
    assert shown["emotion"] == api["emotion"]
    assert shown["point"] == "line"  # no transcript, no valence: arousal as a line across the plane
    assert "전사 없음" in shown["transcript"]


def test_a_refused_upload_shows_the_servers_reason(page, served):
    fake = served["root"] / "가짜.wav"
    fake.write_text("소리가 아닙니다", encoding="utf-8")
    page.set_input_files("#audio-file", str(fake))
    with page.expect_response(lambda r: r.url.endswith("/api/predict")) as answer:
        page.click("#predict")
    assert answer.value.status == 422
    expect(page.locator("#status")).to_have_class(re.compile(r"\berror\b"))
    status = page.inner_text("#status")
    assert "가짜.wav" in status and "not audio" in status
    assert page.is_hidden("#results")


def test_a_long_upload_shows_the_timeline_of_its_segments(page, served):
    import soundfile as sf

    from test_timeline import burst, join

    window = served["app"].state.model.window_samples / 16000
    wave, truth = join([burst(3.0, freq=f) for f in (180, 240, 300, 200, 260, 320)], [2.0] * 6)
    assert len(wave) / 16000 > window  # longer than the model hears at once, whichever export serves
    sf.write(served["root"] / "긴_녹음.wav", wave, 16000)
    page.set_input_files("#audio-file", str(served["root"] / "긴_녹음.wav"))
    page.fill("#text", "그냥 그래요")  # a given text: the segments are not transcribed (keeps the test fast)
    with page.expect_response(lambda r: r.url.endswith("/api/predict")) as answer:
        page.click("#predict")
    assert answer.value.status == 200, answer.value.text()
    segments = answer.value.json()["segments"]
    assert [s["start"] for s in segments] == pytest.approx([start for start, _ in truth], abs=0.3)
    expect(page.locator("#timeline-panel")).to_be_visible()
    bands = page.locator("#timeline rect.band")
    expect(bands).to_have_count(len(segments))
    assert [bands.nth(i).get_attribute("data-emotion") for i in range(len(segments))] == [
        s["emotion"] for s in segments]
    expect(page.locator("#segments tbody tr")).to_have_count(len(segments))
    expect(page.locator("#timeline polyline.arousal")).to_have_count(1)
    # A short clip afterwards hides the timeline again.
    page.set_input_files("#audio-file", str(served["wav"]))
    with page.expect_response(lambda r: r.url.endswith("/api/predict")):
        page.click("#predict")
    expect(page.locator("#timeline-panel")).to_be_hidden()


def test_the_transcribe_button_fills_the_text_box(page, served):
    import soundfile as sf

    from kemdy_tf import stt
    from test_stt import speak

    if not stt.available():
        expect(page.locator("#transcribe")).to_be_disabled()
        pytest.skip(stt.unavailable_reason())
    import shutil
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    sf.write(served["root"] / "말.wav", speak("지금 너무 화가 나요", trim=True), 16000)
    page.set_input_files("#audio-file", str(served["root"] / "말.wav"))
    with page.expect_response(lambda r: r.url.endswith("/api/transcribe")) as answer:
        page.click("#transcribe")
    assert answer.value.status == 200, answer.value.text()
    heard = answer.value.json()["transcript"]
    assert heard
    expect(page.locator("#text")).to_have_value(heard)
    expect(page.locator("#text-count")).to_have_text(str(len(heard)))
    with page.expect_response(lambda r: r.url.endswith("/api/predict")) as answer:
        page.click("#predict")
    assert answer.value.json()["transcript"] == heard
    expect(page.locator("#transcript-used")).to_contain_text(heard)


def test_the_page_sends_its_session_shows_the_statistics_and_resets_them(page, served):
    """Every prediction carries the tab's session id (kept over a reload; another tab has its
    own), the statistics used are shown, and the reset button asks the server to forget the
    session's clips. /api/health is passed through with `speaker_statistics` on, as for an
    export that reads speaker statistics, whichever export serves (tests/test_web.py checks the
    server's side on one that does)."""
    def reads_statistics(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "speaker_statistics": True})

    stored = "() => sessionStorage.getItem('kemdy_tf.session')"
    session = page.evaluate(stored)
    assert re.fullmatch(r"[0-9a-f]{32}", session)
    page.route("**/api/health", reads_statistics)
    page.reload()
    expect(page.locator("#reset-statistics")).to_be_enabled()
    assert page.evaluate(stored) == session  # the same tab keeps its session over a reload

    page.set_input_files("#audio-file", str(served["wav"]))
    with page.expect_response(lambda r: r.url.endswith("/api/predict")) as answer:
        page.click("#predict")
    assert answer.value.status == 200, answer.value.text()
    sent = answer.value.request.post_data_buffer
    assert re.search(rb'name="session"\r\n\r\n' + session.encode() + rb"\r\n", sent)
    # The answer as an export that reads statistics gives it, drawn by the page's own render().
    page.evaluate("(result) => render(result)", {**answer.value.json(), "statistics": "this session (2 clips)"})
    expect(page.locator("#statistics-used")).to_have_text(
        "화자 통계 (speaker statistics): 이 세션의 음성 2개 (this session, 2 clips)")

    with page.expect_response(lambda r: r.url.endswith("/api/session/reset")) as answer:
        page.click("#reset-statistics")
    assert answer.value.status == 200 and answer.value.json()["session"] == session
    expect(page.locator("#session-status")).to_contain_text("speaker statistics reset")

    other = page.context.new_page()  # another tab: a session of its own
    other.goto(served["url"] + "/")
    assert re.fullmatch(r"[0-9a-f]{32}", other.evaluate(stored)) and other.evaluate(stored) != session
    other.close()
