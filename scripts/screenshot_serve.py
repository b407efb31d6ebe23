"""Take the README's screenshot of `voicecoach serve`'s page (docs/serve.png), in Debian's
headless chromium on a phone-sized window, a mid-back-knot session in its fifth rep.

Run by hand after changing the page: `python scripts/screenshot_serve.py`. The session is
rendered with espeak-ng into a temporary data folder, so your own history is untouched.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "serve.png"


def until(condition: object, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        os.environ["VOICECOACH_DATA_DIR"] = data
        import uvicorn
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        from voicecoach.serve import WebCoach, create_app, listen, served_dir
        from voicecoach.spec import VoiceSettings

        sock = listen("127.0.0.1", 0)
        app = create_app(WebCoach(served_dir(), VoiceSettings(engine="espeak")))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        until(lambda: server.started, "the server")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                         "--window-size=412,1000", "--hide-scrollbars"):
            options.add_argument(argument)
        browser = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        try:
            browser.get(f"http://127.0.0.1:{sock.getsockname()[1]}/")
            card = "article[data-routine='mid-back-knot']"
            until(lambda: browser.find_elements(By.CSS_SELECTOR, f"{card} button.start"), "the page")
            Select(browser.find_element(By.CSS_SELECTOR, f"{card} select[name=variation]")) \
                .select_by_value("wall")
            browser.find_element(By.CSS_SELECTOR, f"{card} button.start").click()
            until(lambda: browser.execute_script(
                "return document.getElementById('audio').currentTime > 0.5"), "the audio")
            browser.execute_script("""
                const a = document.getElementById('audio');
                const rep = timeline.spans.find(s => s.label === 'rep 5 of 30');
                a.currentTime = rep.start + 0.3;""")
            until(lambda: browser.find_element(By.ID, "label").text == "rep 5 of 30"
                  and browser.find_element(By.ID, "caption").text, "rep 5 and its caption")
            OUT.parent.mkdir(exist_ok=True)
            browser.save_screenshot(str(OUT))
        finally:
            browser.quit()
            server.should_exit = True
            thread.join(timeout=60)
    print(f"Wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
