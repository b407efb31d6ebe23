"""espeak-ng in a helper process: every phrase spoken from the same starting state.

Run by speech.EngineProcess as ``python -I -S espeak_server.py BINDING MODE ...``, BINDING
being the path of pyttsx3's ctypes binding of libespeak-ng (pyttsx3/drivers/_espeak.py),
with nothing else but the standard library: no numpy, no voicecoach, so it is ready in
about 50 ms.

Why a process of its own:

- espeak-ng keeps synthesis state in the library from one phrase to the next, and no
  call resets it (in 1.51, among others, the pitch-flutter phase is a function-static
  in wavegen.c's AdvanceParameters). The same text came out 20 to 296 samples longer or
  shorter, with a different waveform, depending on everything the process had said
  before: measured, 50 phrases said in three orders in one process gave three different
  sets. So this process initialises espeak-ng once, sets the voice and rate, and forks
  a child per phrase: each child starts from that same state, speaks, sends its samples
  back and exits. A phrase is the same bytes whatever was said before it and in
  whatever order, and two children speak at once on two cores; a fork and the pages
  it copies cost about 1.6 ms of CPU per phrase. (Without fork, on Windows, phrases
  are spoken one after another here: still one order per process.)
- espeak_Initialize in 1.51 probes the sound server whatever the output mode asked
  for: pcaudiolib opens a PulseAudio playback stream to see whether one is there, and a
  server that accepts and never answers held every cold export for 30 s. Before the
  library is loaded, this process points PULSE_SERVER at an address that refuses at
  once and forgets DISPLAY (libpulse would read a server from the X root window);
  pcaudiolib's ALSA fallback is only created, never opened. Synchronous mode never
  plays. Nothing here touches audio output, and the parent's own environment is
  unchanged.

Protocol on stdin/stdout, integers little-endian:

- first, from the helper: status (i32) and a message (u32 length, UTF-8); status 0 and
  the sample rate as the message when ready;
- request: id (u32), text (u32 length, UTF-8);
- reply: id (u32), status (i32), payload (u32 length): int16 samples, or a UTF-8 error.

Modes: ``serve VOICE RATE JOBS`` (VOICE "" for the default) and ``voices`` (one JSON
line per voice, then exit). Closing stdin ends it once running phrases are sent.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import struct
import sys
from collections import deque
from typing import Any

OK = 0
NO_ENGINE = 1
UNKNOWN_VOICE = 2
FAILED = 3

NO_SOUND_SERVER = "unix:/dev/null/voicecoach-never-plays"
"""connect() on it fails at once (ENOTDIR): libpulse gives up without trying another."""

READY = struct.Struct("<iI")
REQUEST = struct.Struct("<II")
REPLY = struct.Struct("<IiI")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Replies:
    """Replies go straight to stdout, whole, one process at a time: children and this
    process take a POSIX record lock (held per process, so a forked child contends with
    its parent) on a file they share, so frames never interleave and the samples are
    copied once, from the child to voicecoach."""

    def __init__(self) -> None:
        import fcntl
        import tempfile

        self._fcntl = fcntl
        self._lock_file = tempfile.TemporaryFile()

    def send(self, request_id: int, status: int, payload: bytes) -> None:
        fd = self._lock_file.fileno()
        self._fcntl.lockf(fd, self._fcntl.LOCK_EX)
        try:
            _write_all(1, REPLY.pack(request_id, status, len(payload)) + payload)
        finally:
            self._fcntl.lockf(fd, self._fcntl.LOCK_UN)


def _voices(espeak: Any) -> list[tuple[str, str, str]]:
    found = []
    for v in espeak.ListVoices():
        languages = v.languages[1:].split(b"\0", 1)[0].decode(errors="replace") if v.languages else ""
        found.append(((v.identifier or b"").decode(errors="replace"),
                      (v.name or b"").decode(errors="replace"), languages))
    return found


def _match_voice(asked: str, voices: list[tuple[str, str, str]]) -> tuple[str, str, str] | None:
    """A voice by its id, its name or a language code people type (en-gb, en-us, en), in
    any case: the exact id first, then the name, then the language."""
    wanted = asked.lower()
    for field in range(4):  # the last: "en" is gmw/en, whose language reads en-gb
        match = next((v for v in voices
                      if (v[field] if field < 3 else v[0].rsplit("/", 1)[-1]).lower() == wanted), None)
        if match is not None:
            return match
    return None


class _Speaker:
    """The initialised engine: speaks one phrase into a list of int16 buffers."""

    def __init__(self, espeak: Any) -> None:
        self.espeak = espeak
        self.buffers: list[bytes] = []
        espeak.SetSynthCallback(self._collect)

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self.buffers.append(ctypes.string_at(wav, count * 2))
        return 0

    def say(self, text: str) -> tuple[int, bytes]:
        self.buffers = []
        status = self.espeak.Synth(text, flags=self.espeak.CHARS_UTF8)
        self.espeak.Synchronize()
        raw = b"".join(self.buffers)
        if status != 0 or not raw:
            return FAILED, f"espeak-ng produced no audio for {text!r}".encode()
        return OK, raw


def _serve_forking(speaker: _Speaker, jobs: int) -> None:
    """Read requests; fork a child for each, at most `jobs` at a time. A child sends its
    own reply and then one byte on its pipe; a child that ends without it is answered
    for."""
    import gc

    replies = _Replies()
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, None)
    pending = b""
    queue: deque[tuple[int, str]] = deque()
    children: dict[int, tuple[int, int, bytearray]] = {}  # pipe fd -> (id, pid, what came)
    reading = True
    gc.freeze()  # children never touch the objects made so far: fewer pages copied

    def start(request_id: int, text: str) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: speak from the state it was forked in, then leave
            code = 1
            try:
                gc.disable()
                os.close(r)
                replies.send(request_id, *speaker.say(text))
                os.write(w, b"1")
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        children[r] = (request_id, pid, bytearray())
        selector.register(r, selectors.EVENT_READ, r)

    while reading or queue or children:
        while queue and len(children) < jobs:
            start(*queue.popleft())
        for key, _ in selector.select():
            if key.data is None:  # a request
                chunk = os.read(0, 1 << 16)
                if not chunk:  # voicecoach is done or gone: what it asked for is not needed
                    reading = False
                    selector.unregister(0)
                    queue.clear()
                    continue
                pending += chunk
                while len(pending) >= REQUEST.size:
                    request_id, size = REQUEST.unpack_from(pending)
                    if len(pending) < REQUEST.size + size:
                        break
                    text = pending[REQUEST.size: REQUEST.size + size].decode("utf-8", "replace")
                    pending = pending[REQUEST.size + size:]
                    queue.append((request_id, text))
                continue
            fd = key.data
            request_id, pid, came = children[fd]
            chunk = os.read(fd, 16)
            if chunk:
                came += chunk
                continue
            selector.unregister(fd)
            os.close(fd)
            del children[fd]
            _, wait_status = os.waitpid(pid, 0)
            if came != b"1":
                message = f"espeak-ng stopped while speaking (wait status {wait_status})"
                replies.send(request_id, FAILED, message.encode())


def _serve_in_turn(speaker: _Speaker) -> None:
    """Without fork: one phrase after another, in this process."""
    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(REQUEST.size)
        if len(head) < REQUEST.size:
            return
        request_id, size = REQUEST.unpack(head)
        text = stdin.read(size).decode("utf-8", "replace")
        status, payload = speaker.say(text)
        _write_all(1, REPLY.pack(request_id, status, len(payload)) + payload)


def main(argv: list[str]) -> int:
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ["PULSE_SERVER"] = NO_SOUND_SERVER
    os.environ.pop("DISPLAY", None)
    mode = argv[2]

    def ready(status: int, message: str) -> None:
        data = message.encode()
        _write_all(1, READY.pack(status, len(data)) + data)

    try:
        _espeak = _load_binding(argv[1])  # loads libespeak-ng
        rate = _espeak.Initialize(_espeak.AUDIO_OUTPUT_SYNCHRONOUS, 500)
        if rate == -1:
            raise RuntimeError("espeak_Initialize failed")
    except Exception as e:  # noqa: BLE001 - the parent says what to install
        ready(NO_ENGINE, f"{type(e).__name__}: {e}")
        return 1
    if mode == "voices":
        ready(OK, str(rate))
        _write_all(1, b"".join(json.dumps(found).encode() + b"\n" for found in _voices(_espeak)))
        return 0
    voice, wpm, jobs = argv[3], int(argv[4]), int(argv[5])
    name = b"en"
    if voice:
        match = _match_voice(voice, _voices(_espeak))
        if match is None:
            ready(UNKNOWN_VOICE, voice)
            return 1
        name = match[0].encode()
    _espeak.SetVoiceByName(name)
    _espeak.SetParameter(_espeak.RATE, wpm, 0)
    speaker = _Speaker(_espeak)
    ready(OK, str(rate))
    try:
        if hasattr(os, "fork"):
            _serve_forking(speaker, max(1, jobs))
        else:
            _serve_in_turn(speaker)
    except BrokenPipeError:  # the parent went away
        return 0
    return 0


def _load_binding(path: str) -> Any:
    """pyttsx3's drivers/_espeak.py by its path, without the pyttsx3 package around it
    (whose engine imports cost 20 ms here, and which this process does not use)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("voicecoach_pyttsx3_espeak", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main(sys.argv))
