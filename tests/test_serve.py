"""`voicecoach serve`, over real HTTP (uvicorn on a free port) and in a real browser:
Debian's chromium, driven by Selenium through Debian's chromedriver.

The server runs in a thread of this process with the access token on (as `--lan` has it),
so the browser tests go through the token too; the command itself runs as a subprocess
for what only it does (the address, the QR code, the Host check, Ctrl-C). Nothing waits a
fixed time: every wait ends as soon as its condition holds.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from scipy.signal import correlate, resample_poly

from tests.terminal import as_a_shell_starts_it
from voicecoach.export import export_one
from voicecoach.history import Target, sessions
from voicecoach.pipeline import prepare
from voicecoach.serve import WebCoach, create_app, listen
from voicecoach.spec import Options, SessionSpec, VoiceSettings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "test-token-0123456789"
WAIT_S = 120.0
"""The longest a condition may take to come true on a loaded two-core machine."""


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll until `condition()` is truthy and return it (a condition, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Served:
    coach: WebCoach
    port: int
    folder: Path
    data: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/{TOKEN}/"


@contextmanager
def running(coach: WebCoach, token: str | None) -> Iterator[int]:
    """uvicorn serving the app in a thread, on a free port; stopped as `serve` stops."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(coach, token), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), "the server to start")
        assert server.started
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("serve-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VOICECOACH_DATA_DIR", str(data))  # its own history, read back here
        folder = data / "served"
        coach = WebCoach(folder, VoiceSettings("en", None, 1.0, "espeak"))
        with running(coach, TOKEN) as port:
            yield Served(coach, port, folder, data)


def request(url: str, body: object = None, *, method: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers={**hdrs, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    """A GET with the path exactly as given (urllib would tidy up `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def ready(served: Served, routine: str, variation: str | None, level: str) -> dict[str, Any]:
    status, _, body = request(served.base + "api/sessions",
                              {"routine": routine, "variation": variation, "level": level})
    assert status in (200, 202), body
    job = json.loads(body)

    def done() -> dict[str, Any] | None:
        _, _, body = request(served.base + f"api/sessions/{job['id']}")
        now: dict[str, Any] = json.loads(body)
        assert now["state"] != "failed", now
        return now if now["state"] == "ready" else None

    result: dict[str, Any] = wait_for(done, f"{job['id']} to render")
    return result


# --- over HTTP -----------------------------------------------------------------------------

def test_the_token_is_needed_for_every_path(served: Served) -> None:
    status, headers, page = request(served.base)
    assert status == 200 and b"<title>voicecoach</title>" in page
    assert headers["referrer-policy"] == "no-referrer"  # the address (and token) stays here
    status, _, routines = request(served.base + "api/routines")
    assert status == 200 and json.loads(routines)["routines"][0]["id"] == "mid-back-knot"
    root = f"http://127.0.0.1:{served.port}"
    for path in ("/", "/api/routines", "/static/coach.js", f"/{TOKEN[:-1]}/",
                 f"/{TOKEN}x/api/routines", f"/x{TOKEN}/", "/index.html"):
        status, _, body = request(root + path)
        assert status == 403, path
        assert body == b"Forbidden: use the address voicecoach serve printed, token included"
    status, _, _ = request(root + "/api/sessions", {"routine": "mid-back-knot"})
    assert status == 403
    # the token alone leads to the page (its relative addresses need the slash)
    assert raw_get(served.port, f"/{TOKEN}")[0] == 307
    status, _, page = request(f"{root}/{TOKEN}")
    assert status == 200 and b"<title>voicecoach</title>" in page


def test_unknown_routines_variations_levels_and_bodies_get_clean_4xx(served: Served) -> None:
    api = served.base + "api/sessions"
    cases: list[tuple[object, int, str]] = [
        ({"routine": "mid-back-knott"}, 404, 'unknown routine "mid-back-knott": did you mean '
         "'mid-back-knot'? valid: mid-back-knot, upper-back-knot"),
        ({"routine": "../../etc/passwd"}, 404, 'unknown routine "../../etc/passwd": valid: '
         "mid-back-knot, upper-back-knot"),
        ({"routine": "mid-back-knot", "variation": "seated"}, 404,
         'unknown variation "seated" of mid-back-knot: valid: kneeling, wall, floor'),
        ({"routine": "mid-back-knot", "level": "max"}, 400,
         'unknown level "max": valid: low, middle, high'),
        (["mid-back-knot"], 400, 'expected a JSON object like {"routine": "mid-back-knot", '
         '"variation": "wall", "level": "middle"}'),
        (b"{not json", 400, "the body is not JSON: Expecting property name enclosed in double "
         "quotes: line 1 column 2 (char 1)"),
    ]
    for body, code, message in cases:
        status, headers, answer = request(api, body)
        assert (status, json.loads(answer)) == (code, {"error": message}), body
        assert headers["content-type"] == "application/json"
    status, _, answer = request(api, b"routine=mid-back-knot",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, json.loads(answer)) == (
        400, {"error": "expected a JSON body (Content-Type: application/json)"})
    for path in ("api/sessions/nope", "sessions/nope/audio.flac", "api/sessions/NOPE/history"):
        status, _, answer = request(served.base + path, {"ended": "completed", "played_s": 1}
                                    if path.endswith("history") else None)
        assert status == 404, path
        assert json.loads(answer)["error"].startswith("no session"), path
    assert request(served.base + "api/routines", method="DELETE")[0] == 405


def test_paths_outside_the_sessions_and_files_it_did_not_make_are_refused(served: Served) -> None:
    job = ready(served, "upper-back-knot", None, "low")
    # a file put in the served folder by someone else, named as the server names its own
    planted = "upper-back-knot-standard-low-0123456789abcdef"
    for suffix in (".flac", ".vtt", ".json"):
        (served.folder / f"{planted}{suffix}").write_text("not voicecoach's")
    secret = served.data / "secret.txt"
    secret.write_text("private")
    t = f"/{TOKEN}"
    for path in (f"{t}/sessions/{planted}/audio.flac", f"{t}/sessions/{planted}/timeline.json",
                 f"{t}/sessions/{job['id']}/../../secret.txt",
                 f"{t}/sessions/{job['id']}/..%2F..%2Fsecret.txt",
                 f"{t}/sessions/..%2F{job['id']}/audio.flac",
                 f"{t}/sessions/{job['id']}/{job['id']}.flac",
                 f"{t}/sessions/%2e%2e/secret.txt", f"{t}/static/../serve.py",
                 f"{t}/static/..%2Fserve.py", f"{t}/static/%2e%2e/serve.py",
                 f"{t}/static/..%2F..%2F..%2Fetc%2Fpasswd", f"{t}/../secret.txt",
                 f"/..{t}/index.html", "/etc/passwd"):
        status, body = raw_get(served.port, path)
        assert 400 <= status < 500, (path, status)
        assert b"private" not in body and b"not voicecoach's" not in body and b"root:" not in body
    for name in ("audio.flac", "captions.vtt", "timeline.json"):  # its own are served
        assert request(served.base + f"sessions/{job['id']}/{name}")[0] == 200


def test_a_session_is_the_export_rendered_once_and_seekable(served: Served, tmp_path: Path) -> None:
    renders = served.coach.renders
    api = served.base + "api/sessions"
    choice = {"routine": "mid-back-knot", "variation": "floor", "level": "high"}
    answers: list[dict[str, Any]] = []

    def ask() -> None:
        answers.append(json.loads(request(api, choice)[2]))

    askers = [threading.Thread(target=ask) for _ in range(4)]  # at once: one render
    for a in askers:
        a.start()
    for a in askers:
        a.join()
    assert len({a["id"] for a in answers}) == 1
    job = ready(served, "mid-back-knot", "floor", "high")
    assert served.coach.renders == renders + 1
    assert ready(served, "mid-back-knot", "floor", "high") == job  # asked again: cached
    assert served.coach.renders == renders + 1
    assert sorted(p.name for p in served.folder.iterdir() if job["id"] in p.name) == [
        f"{job['id']}.flac", f"{job['id']}.json", f"{job['id']}.vtt"]  # no temporary file left

    # the same bytes as `voicecoach export mid-back-knot -v floor --level high --captions -o x.flac`
    spec = SessionSpec("mid-back-knot", "floor", Options("high"),
                       VoiceSettings("en", None, 1.0, "espeak"))
    flac, vtt = export_one(spec, tmp_path / "export.flac", captions=True)
    status, headers, audio = request(served.base + job["audio"])
    assert status == 200 and headers["content-type"] == "audio/flac"
    assert headers["accept-ranges"] == "bytes"
    assert audio == flac.read_bytes()
    assert request(served.base + job["captions"])[2] == vtt.read_bytes()

    # a Range request, as the audio element sends when the page jumps
    status, headers, part = request(served.base + job["audio"], headers={"Range": "bytes=4096-8191"})
    assert status == 206
    assert headers["content-range"] == f"bytes 4096-8191/{len(audio)}"
    assert part == audio[4096:8192]
    status, headers, _ = request(served.base + job["audio"],
                                 headers={"Range": f"bytes={len(audio)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(audio)}"

    # the timeline is show --json's, with the exercises' sections
    timeline = json.loads(request(served.base + job["timeline"])[2])
    made = prepare("mid-back-knot", "floor", Options("high")).timeline
    assert {k: timeline[k] for k in made.to_json()} == made.to_json()
    sr = made.sample_rate
    assert [(s["title"], s["start"]) for s in timeline["sections"]] == [
        (s.title, round(s.start / sr, 6)) for s in made.sections]

    # a server started again on the same folder serves it without rendering it again
    again = WebCoach(served.folder, served.coach.voice)
    spec_again, title = again.spec_for("mid-back-knot", "floor", "high")
    assert again.start(spec_again, title).state == "ready" and again.renders == 0


def test_history_requests_are_checked(served: Served) -> None:
    job = ready(served, "upper-back-knot", None, "low")
    url = served.base + f"api/sessions/{job['id']}/history"
    for body, message in [
        ({"ended": "done", "played_s": 3}, "ended: expected 'completed' or 'stopped', got \"done\""),
        ({"ended": "stopped", "played_s": -1}, "played_s: expected seconds played, 0 or more, got -1"),
        ({"ended": "stopped", "played_s": "9"}, 'played_s: expected seconds played, 0 or more, got "9"'),
        ({"ended": "stopped"}, "played_s: expected seconds played, 0 or more, got null"),
    ]:
        status, _, answer = request(url, body)
        assert (status, json.loads(answer)) == (400, {"error": message})
    assert not [e for e in sessions() if e.routine_id == "upper-back-knot"]


# --- in the browser ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh "
                    "installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--autoplay-policy=no-user-gesture-required", "--window-size=430,932",
                     "--mute-audio"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


HANDLERS = """
(() => {
  window.mediaHandlers = {};
  const set = navigator.mediaSession.setActionHandler.bind(navigator.mediaSession);
  navigator.mediaSession.setActionHandler = (action, handler) => {
    window.mediaHandlers[action] = handler;
    set(action, handler);
  };
})();
"""
"""Keeps the page's Media Session handlers, to call them as the lock screen would."""

PAGE_STATE = """
const a = document.getElementById('audio');
const now = document.getElementById('now');
return {time: Number(now.dataset.time), current: a.currentTime, paused: a.paused,
        step: document.getElementById('step').textContent,
        label: document.getElementById('label').textContent,
        left: document.getElementById('left').textContent,
        caption: document.getElementById('caption').textContent,
        week: document.getElementById('week').textContent,
        lockscreen: navigator.mediaSession.metadata && {
            title: navigator.mediaSession.metadata.title,
            artist: navigator.mediaSession.metadata.artist},
        awake: wakeLock !== null && !wakeLock.released,
        seeks: window.seeks || []};
"""


LISTEN = """
if (!window.heard) {
  const context = new AudioContext();
  const source = context.createMediaElementSource(document.getElementById('audio'));
  window.heard = context.createAnalyser();
  window.heard.fftSize = 32768;
  source.connect(window.heard);
  window.heard.connect(context.destination);
  window.heardRate = context.sampleRate;
}
"""
"""Taps what the audio element plays (through Web Audio), as a listener would hear it."""

HEARD = """
const samples = new Float32Array(heard.fftSize);
heard.getFloatTimeDomainData(samples);
return [document.getElementById('audio').currentTime, heardRate, Array.from(samples)];
"""


def heard_vs_clock_s(browser: Any, reference: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Where what was just played lies in the session's audio, against the element's clock:
    (seconds later than currentTime, how well it matched: 1 is the same samples)."""
    t, rate, samples = browser.execute_script(HEARD)
    played = resample_poly(np.asarray(samples, dtype=np.float32), sample_rate, int(rate))
    lo, hi = max(0, int((t - 3) * sample_rate)), min(len(reference), int((t + 2) * sample_rate))
    around = reference[lo:hi]
    c = correlate(around, played, mode="valid")
    k = int(np.argmax(np.abs(c)))
    match = abs(c[k]) / (np.linalg.norm(played) * np.linalg.norm(around[k:k + len(played)]) + 1e-12)
    return (lo + k + len(played)) / sample_rate - t, float(match)


def state(browser: Any) -> dict[str, Any]:
    result: dict[str, Any] = browser.execute_script(PAGE_STATE)
    return result


def at(items: list[dict[str, Any]], t: float) -> dict[str, Any] | None:
    found = None
    for item in items:
        if item["start"] <= t < item["end"]:
            found = item
    return found


def near(t: float, times: list[float], slack_s: float = 0.35) -> bool:
    """Within a display refresh of a boundary, where either side is right."""
    return any(abs(t - x) < slack_s for x in times)


def test_the_page_coaches_a_session(served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.execute_cdp_cmd("Browser.grantPermissions", {"permissions": ["wakeLockScreen"]})
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HANDLERS})
    browser.get(served.base)
    card = "article[data-routine='mid-back-knot']"
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"{card} button.start"),
             "the routines to load")
    assert browser.find_element(By.CSS_SELECTOR, f"{card} h2").text == "Mid-back knot"
    assert "This week: 0 sessions, of 3 to 4" in browser.find_element(By.CSS_SELECTOR, card).text
    Select(browser.find_element(By.CSS_SELECTOR, f"{card} select[name=variation]")) \
        .select_by_visible_text("Standing, with the foam roller on a wall")
    Select(browser.find_element(By.CSS_SELECTOR, f"{card} select[name=level]")) \
        .select_by_value("low")
    made = prepare("mid-back-knot", "wall", Options("low")).timeline
    length = browser.find_element(By.CSS_SELECTOR, f"{card} .length").text
    minutes, seconds = divmod(round(made.duration_s), 60)
    assert length == f"Length: {minutes}:{seconds:02d}"
    browser.find_element(By.CSS_SELECTOR, f"{card} button.start").click()

    # it renders, then plays: the audio's clock advances
    first = wait_for(lambda: (s := state(browser))["current"] > 0.5 and s, "the audio to play")
    wait_for(lambda: state(browser)["current"] > first["current"] + 1.0, "the audio to advance")
    assert browser.find_element(By.ID, "session-title").text == "Mid-back knot"
    timeline = json.loads(request(served.base + "sessions/" + json.loads(request(
        served.base + "api/sessions", {"routine": "mid-back-knot", "variation": "wall",
                                       "level": "low"})[2])["id"] + "/timeline.json")[2])
    sections = timeline["sections"]
    speech = [e for e in timeline["events"] if e["kind"] == "speech"]
    assert [li.text.split(" · ")[0] for li in browser.find_elements(By.CSS_SELECTOR, "#steps li")] \
        == [s["title"] for s in sections]
    assert state(browser)["awake"]  # the screen stays on while it plays
    browser.execute_script(LISTEN)
    audio_url = served.base + browser.execute_script("return session.audio")
    reference, sample_rate = sf.read(io.BytesIO(request(audio_url)[2]), dtype="float32")

    # across an exercise's start: what the page shows is the timeline's, moment by moment
    browser.execute_script("window.seeks = []; document.getElementById('audio')"
                           ".addEventListener('seeking', e => window.seeks.push(e.target.currentTime));")
    k = 2
    browser.execute_script(f"document.getElementById('audio').currentTime = {sections[k]['start'] - 2}")
    seen: list[dict[str, Any]] = []

    def into_next_exercise() -> bool:
        s = state(browser)
        seen.append(s)
        first_line = next(e for e in speech if e["start"] >= sections[k]["start"])
        return s["step"] == sections[k]["title"] and s["caption"] == first_line["text"]

    wait_for(into_next_exercise, "the next exercise's name and first line")
    section_starts = [s["start"] for s in sections]
    speech_edges = [x for e in speech for x in (e["start"], e["end"])]
    shown = [s for s in seen if s["time"] >= sections[k]["start"] - 2.05]
    assert {s["step"] for s in shown} == {sections[k - 1]["title"], sections[k]["title"]}
    for s in shown:
        t = s["time"]
        if not near(t, section_starts):
            assert s["step"] == at(sections, t)["title"], s  # type: ignore[index]
        if not near(t, speech_edges):
            line = at(speech, t)
            assert s["caption"] == (line["text"] if line else ""), s
    assert state(browser)["lockscreen"] == {
        "title": sections[k]["title"],
        "artist": "Mid-back knot: Standing, with the foam roller on a wall"}

    # next track on the lock screen or a headset: lands on the next step's start, and plays
    # on from there
    assert sorted(browser.execute_script("return Object.keys(window.mediaHandlers)")) == [
        "nexttrack", "pause", "play", "previoustrack", "seekto"]
    browser.execute_script("window.mediaHandlers.nexttrack({action: 'nexttrack'})")
    seek = wait_for(lambda: state(browser)["seeks"][1:], "the jump")[0]
    assert seek == pytest.approx(sections[k + 1]["start"], abs=1e-3)
    wait_for(lambda: (s := state(browser))["step"] == sections[k + 1]["title"]
             and s["current"] > seek + 0.5, "playing on from the next exercise")
    # ... and what is heard there is the audio at that moment (an MP3 was up to 1.35 s off)
    sound = next(e for e in timeline["events"] if e["start"] >= seek)
    wait_for(lambda: state(browser)["current"] > sound["start"] + 0.8, "a sound after the jump")
    offset_s, match = heard_vs_clock_s(browser, reference, sample_rate)
    assert match > 0.9 and abs(offset_s) < 0.05, (offset_s, match)

    browser.execute_script("window.mediaHandlers.pause({action: 'pause'})")
    wait_for(lambda: state(browser)["paused"] and not state(browser)["awake"], "the pause")
    browser.execute_script("window.mediaHandlers.play({action: 'play'})")
    wait_for(lambda: not state(browser)["paused"] and state(browser)["awake"], "playing again")

    # the page's previous button, well into an exercise: back to its start
    browser.execute_script(f"document.getElementById('audio').currentTime = {seek + 10}")
    wait_for(lambda: state(browser)["time"] > seek + 10, "the seek into the exercise")
    browser.find_element(By.ID, "prev").click()
    wait_for(lambda: len(state(browser)["seeks"]) >= 4, "the jump back")
    assert state(browser)["seeks"][3] == pytest.approx(sections[k + 1]["start"], abs=1e-3)

    # in a rep: which one, and the exercise's seconds left
    rep = next(s for s in timeline["spans"] if s["label"] == "rep 5 of 30")
    browser.execute_script(f"document.getElementById('audio').currentTime = {rep['start'] + 0.5}")
    shown_rep = wait_for(lambda: (s := state(browser))["label"] == "rep 5 of 30" and s, "rep 5")
    section = at(sections, shown_rep["time"])
    assert section is not None and section["title"] == sections[k]["title"]
    minutes, seconds = divmod(-int(-(section["end"] - shown_rep["time"]) // 1), 60)
    assert minutes >= 1 and shown_rep["left"] == f"{minutes}:{seconds:02d} left"

    # stopped: in the history as `play` records it, and the page says where the week stands
    browser.find_element(By.ID, "stop").click()
    wait_for(lambda: [e for e in sessions() if e.routine_id == "mid-back-knot"], "the history")
    stopped = [e for e in sessions() if e.routine_id == "mid-back-knot"]
    assert [(e.variation, e.level, e.ended) for e in stopped] == [("wall", "low", "stopped")]
    assert 0 < stopped[0].played_s < made.duration_s
    assert stopped[0].planned_s == pytest.approx(made.duration_s, abs=0.01)
    assert stopped[0].stopped_at_step in [s["title"] for s in sections]
    # where it stopped in the percent of the session (a jump put it far past the time heard)
    where = 100 * shown_rep["time"] / timeline["duration"]
    assert stopped[0].stopped_at_percent is not None
    assert where - 0.5 < stopped[0].stopped_at_percent < where + 5
    assert stopped[0].target == Target(3, 4)
    wait_for(lambda: state(browser)["week"] == "This week: 0 sessions, of 3 to 4", "the week")
    assert not state(browser)["awake"]

    # played to the end: completed, and it counts
    browser.execute_script(f"const a = document.getElementById('audio'); "
                           f"a.currentTime = {timeline['duration'] - 1.5}; a.play();")
    wait_for(lambda: len(sessions()) == 2, "the completed session in the history")
    completed = next(e for e in sessions() if e.ended == "completed")
    assert (completed.routine_id, completed.variation, completed.level) == (
        "mid-back-knot", "wall", "low")
    assert 1.0 < completed.played_s < 2.0  # what was heard since the stop: the last 1.5 s
    wait_for(lambda: state(browser)["week"] == "This week: 1 session, of 3 to 4", "the week")
    assert served.coach.renders >= 1


# --- the command ---------------------------------------------------------------------------

def start_serve(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen([sys.executable, "-m", "voicecoach", "serve", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("voicecoach is at http://"), first + process.stderr.read()  # type: ignore[union-attr]
    url = first.split()[-1]
    qr = []
    while not (line := process.stdout.readline()).startswith("Open it"):
        qr.append(line)
    return process, url, "".join(qr)


def stop_serve(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err == "Interrupted.\n"
    return err


STOPPED_WHILE_THE_LOOP_IS_MADE = """
import runpy, selectors, signal, sys
signum = int(sys.argv[1])
made = selectors.DefaultSelector.__init__
def make(self, *args, **kwargs):
    made(self, *args, **kwargs)
    signal.raise_signal(signum)  # as if it came while asyncio makes its loop
selectors.DefaultSelector.__init__ = make
sys.argv = ["voicecoach", "serve", "--port", "0"]
runpy.run_module("voicecoach", run_name="__main__")
"""


@pytest.mark.parametrize(("signum", "said"), [(signal.SIGINT, "Interrupted."),
                                              (signal.SIGHUP, "Stopped by SIGHUP.")],
                         ids=["SIGINT", "SIGHUP"])
def test_a_stop_while_the_server_starts_is_one_line(tmp_path: Path, signum: int,
                                                    said: str) -> None:
    """CI caught a Ctrl-C that arrived while uvicorn's event loop was being made (before
    uvicorn puts in its own handlers): the KeyboardInterrupt left the loop half made and
    Python printed "Exception ignored in: BaseEventLoop.__del__" with a traceback. A stop
    there now asks the server to stop, and is taken once it has."""
    env = {**os.environ, "VOICECOACH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", STOPPED_WHILE_THE_LOOP_IS_MADE, str(signum)],
                          capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL, preexec_fn=as_a_shell_starts_it)
    assert done.stdout.startswith("voicecoach is at http://127.0.0.1:")
    assert (done.returncode, done.stderr) == (128 + signum, said + "\n")


def test_serve_prints_its_address_and_qr_code_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    import segno

    env = {**os.environ, "VOICECOACH_DATA_DIR": str(tmp_path)}
    process, url, qr = start_serve("--port", "0", env=env)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        drawn = io.StringIO()
        segno.make_qr(url, error="m").terminal(out=drawn, compact=True)
        assert qr == drawn.getvalue()
        status, _, page = request(url)
        assert status == 200 and b"<title>voicecoach</title>" in page
        port = int(url.split(":")[2].rstrip("/"))
        # this machine only: a page elsewhere cannot reach it under another name
        status, body = raw_get(port, "/", host="attacker.example:80")
        assert (status, body) == (403, b"Forbidden: this server answers as localhost, not as "
                                       b"'attacker.example'")
        assert raw_get(port, "/", host=f"localhost:{port}")[0] == 200
        # the port is taken: one line, exit 1
        busy = subprocess.run([sys.executable, "-m", "voicecoach", "serve", "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert (busy.returncode, busy.stdout) == (1, "")
        assert busy.stderr == (f"Error: cannot listen on 127.0.0.1 port {port}: address already "
                               "in use: pick another --port, or 0 for any free one\n")
    finally:
        stop_serve(process)


def test_serve_lan_puts_a_token_in_the_address(tmp_path: Path) -> None:
    env = {**os.environ, "VOICECOACH_DATA_DIR": str(tmp_path)}
    process, url, qr = start_serve("--lan", "--port", "0", env=env)
    try:
        _, _, rest = url.partition("//")
        hostport, _, token = rest.partition("/")
        token = token.rstrip("/")
        assert len(token) >= 20  # 128 random bits
        port = int(hostport.rsplit(":", 1)[1])
        status, page = raw_get(port, f"/{token}/", host=hostport)
        assert status == 200 and b"<title>voicecoach</title>" in page
        assert raw_get(port, "/", host=hostport)[0] == 403
        assert raw_get(port, "/api/routines", host=hostport)[0] == 403
        assert raw_get(port, f"/{token[:-1]}/api/routines", host=hostport)[0] == 403
    finally:
        stop_serve(process)
    again, url_again, _ = start_serve("--lan", "--port", "0", env=env)
    stop_serve(again)
    assert url_again.rsplit("/", 2)[1] != token  # a new token each time


def test_serve_renders_in_the_voice_it_was_given(tmp_path: Path) -> None:
    """`serve --engine espeak --voice en --rate 140 --volume 0.5`: the page's session is the
    export with those options, byte for byte."""
    env = {**os.environ, "VOICECOACH_DATA_DIR": str(tmp_path / "data")}
    voice = ["--engine", "espeak", "--voice", "en", "--rate", "140", "--volume", "0.5"]
    process, url, _ = start_serve("--port", "0", *voice, env=env)
    try:
        status, _, body = request(url + "api/sessions", {"routine": "mid-back-knot", "level": "low"})
        assert status == 202, body
        job_id = json.loads(body)["id"]

        def done() -> dict[str, Any] | None:
            now: dict[str, Any] = json.loads(request(url + f"api/sessions/{job_id}")[2])
            assert now["state"] != "failed", now
            return now if now["state"] == "ready" else None

        job = wait_for(done, "the session to render")
        audio = request(url + job["audio"])[2]
    finally:
        stop_serve(process)
    spec = SessionSpec("mid-back-knot", None, Options("low"), VoiceSettings("en", 140, 0.5, "espeak"))
    flac, _ = export_one(spec, tmp_path / "export.flac", captions=True)
    assert audio == flac.read_bytes()
    default = SessionSpec("mid-back-knot", None, Options("low"), VoiceSettings("en", None, 1.0, "espeak"))
    assert audio != export_one(default, tmp_path / "default.flac")[0].read_bytes()


@pytest.mark.parametrize(("voice", "said"), [
    (["--engine", "espeak", "--voice", "nosuch"], "Error: unknown voice 'nosuch': "),
    (["--engine", "espeak", "--voice", "en_US-joe-medium"],
     "Error: 'en_US-joe-medium' is a piper voice: add --engine piper"),
    (["--rate", "79"], "Error: Invalid value for '--rate': 79 is not in the range 80<=x<=400."),
], ids=["unknown", "other-engine", "rate"])
def test_serve_refuses_a_wrong_voice_before_it_listens(tmp_path: Path, voice: list[str],
                                                       said: str) -> None:
    env = {**os.environ, "VOICECOACH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "voicecoach", "serve", "--port", "0", *voice],
                          capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stdout == ""
    assert said in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_ctrl_c_during_a_render_leaves_no_file_behind(tmp_path: Path) -> None:
    env = {**os.environ, "VOICECOACH_DATA_DIR": str(tmp_path)}
    process, url, _ = start_serve("--port", "0", env=env)
    try:
        status, _, body = request(url + "api/sessions", {"routine": "mid-back-knot", "level": "high"})
        assert status == 202, body
        job = json.loads(body)

        def rendering() -> bool:
            now = json.loads(request(url + f"api/sessions/{job['id']}")[2])
            assert now["state"] != "ready", "rendered before it could be interrupted"
            return bool(now["stage"] == "Rendering the audio" and now["progress"] > 0)

        wait_for(rendering, "the audio to be rendering")
        assert [p.name for p in (tmp_path / "served").iterdir()]  # its temporary file
    finally:
        stop_serve(process)
    assert list((tmp_path / "served").iterdir()) == []


def test_the_page_needs_nothing_from_elsewhere(served: Served) -> None:
    import re

    page = request(served.base)[2].decode()
    linked = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(linked) == ["data:,", "static/coach.css", "static/coach.js"]
    for name in ("coach.css", "coach.js"):
        status, _, body = request(served.base + f"static/{name}")
        assert status == 200
        assert not re.search(r"https?:|//[a-z]|@import|url\(", body.decode()), name
