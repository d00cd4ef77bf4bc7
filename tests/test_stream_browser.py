"""Live mode end to end in headless Chromium: a fake microphone streams to /api/stream.

Chromium's fake capture device plays a synthetic WAV (`--use-file-for-fake-audio-capture`):
Korean sentences from espeak-ng with pauses when it is installed (so Vosk has words to make
final), else a modulated tone. The page's worklet sends 16-bit PCM; the test waits for three
windows on the live timeline and, with speech recognition installed, for the transcript,
then stops and downloads the session's CSV.

The model and the screenshot follow tests/test_web_browser.py: the real export when there is
one (then docs/figures/web_live.png, shown in docs/web.md), else the tiny untrained export and
a screenshot in the temporary folder (unless docs/figures/web_live.png does not exist yet).
"""

from __future__ import annotations

import csv
import io
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from test_web_browser import CHROMIUM, CHROMIUM_ARGS, ROOT, TIMEOUT_MS, _real_export  # skips without a browser

from playwright.sync_api import expect

from kemdy_tf import stt
from kemdy_tf.web.app import Limits, create_app
from test_web import LoopbackServer, make_export

# A browser, a live server and ten seconds of fake microphone: the slow job runs it (CI gates on it).
pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "docs" / "figures" / "web_live.png"
RATE = 16000


def microphone_wav(path) -> bool:
    """The fake microphone's audio at `path`; whether it is speech (espeak-ng) rather than a tone."""
    if shutil.which("espeak-ng"):
        from test_stt import speak

        pause = np.zeros(2 * RATE, np.float32)  # Vosk makes an utterance final ~1.3 s into a pause
        pieces = [piece for text in ("지금 너무 화가 나요", "오늘 날씨가 정말 좋네요")
                  for piece in (speak(text, trim=True), pause)]
        wave, speech = np.concatenate([np.zeros(RATE // 2, np.float32), *pieces]), True
    else:
        t = np.arange(8 * RATE) / RATE
        wave, speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)), False
    sf.write(path, np.asarray(wave, np.float32), RATE, subtype="PCM_16")
    return speech


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_browser")
    real = _real_export()
    app = create_app(real or make_export(root), Limits())  # speech recognition when installed
    speech = microphone_wav(root / "microphone.wav")
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={root / 'microphone.wav'}"]
    with LoopbackServer(app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield {"url": server.url, "app": app, "real": real is not None, "speech": speech, "root": root,
               "browser": browser}
        browser.close()


def test_live_mode_draws_windows_and_the_transcript_and_offers_the_session_csv(live):
    context = live["browser"].new_context(viewport={"width": 1100, "height": 900}, locale="ko-KR")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live["url"] + "/")
    expect(page.locator("#model-info")).to_have_text(re.compile(r"^모델 \S+/\d+ "))

    page.click("#live")
    expect(page.locator("#live")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#live-panel")).to_be_visible()
    bands = page.locator("#live-timeline rect.band")
    expect(bands.nth(2)).to_be_attached(timeout=TIMEOUT_MS)  # at least three windows, one a second
    expect(page.locator("#live-timeline polyline.arousal")).to_have_count(1)
    emotions = set(live["app"].state.model.classes)
    assert {bands.nth(i).get_attribute("data-emotion") for i in range(bands.count())} <= emotions
    recognising = live["app"].state.streams.recognizer is not None and live["speech"]
    if recognising:
        expect(page.locator("#live-final")).to_have_text(re.compile(r"\S"), timeout=TIMEOUT_MS)  # words made final
        expect(page.locator("#live-timeline polyline.valence")).to_have_count(1, timeout=TIMEOUT_MS)  # and read
    elif not stt.available():
        expect(page.locator("#live-status")).to_contain_text("no speech recognition")

    page.locator("#live-panel").scroll_into_view_if_needed()
    target = SCREENSHOT if live["real"] or not SCREENSHOT.exists() else live["root"] / "web_live.png"
    page.locator("#live-panel").screenshot(path=str(target))
    assert target.stat().st_size > 10_000

    page.click("#live-stop")
    expect(page.locator("#live-csv")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#live")).to_have_attribute("aria-pressed", "false")
    with page.expect_download() as download:
        page.click("#live-csv")
    assert re.fullmatch(r"live-[\d-]+\.csv", download.value.suggested_filename)
    rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert len(rows) >= 3 and [float(r["end"]) for r in rows] == [float(i + 1) for i in range(len(rows))]
    assert {r["emotion"] for r in rows} <= emotions
    if recognising:
        assert any(r["transcript_source"] == "stt" for r in rows)
    assert not errors, f"script errors: {errors}"
    context.close()
