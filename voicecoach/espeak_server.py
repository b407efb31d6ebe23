"""espeak-ng in a helper process: every phrase spoken from the same starting state.

Run by speech.EngineProcess as ``python -I -S espeak_server.py PYTTSX3_DIR MODE ...``
with nothing but the standard library and pyttsx3's ctypes binding of libespeak-ng:
no numpy, no voicecoach, so it starts in a few tens of milliseconds.

Why a process of its own:

- espeak-ng keeps synthesis state in the library from one phrase to the next, and no
  call resets it (in 1.51, among others, the pitch-flutter phase is a function-static
  in wavegen.c's AdvanceParameters). The same text came out 20 to 296 samples longer or
  shorter, with a different waveform, depending on everything the process had said
  before: measured, 50 phrases said in three orders in one process gave three different
  sets. So this process initialises espeak-ng once, sets the voice and rate, and forks
  a child per phrase: each child starts from that same state, speaks, sends its samples
  back and exits. A phrase is the same bytes whatever was said before it and in
  whatever order, and two children speak at once on two cores. (Without fork, on
  Windows, phrases are spoken one after another here: still one order per process.)
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
from typing import Any, BinaryIO

OK = 0
NO_ENGINE = 1
UNKNOWN_VOICE = 2
FAILED = 3

NO_SOUND_SERVER = "unix:/dev/null/voicecoach-never-plays"
"""connect() on it fails at once (ENOTDIR): libpulse gives up without trying another."""

_READY = struct.Struct("<iI")
_REQUEST = struct.Struct("<II")
_REPLY = struct.Struct("<IiI")


def _send(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()


def _voices(espeak: Any) -> list[tuple[str, str, str]]:
    found = []
    for v in espeak.ListVoices():
        languages = v.languages[1:].split(b"\0", 1)[0].decode(errors="replace") if v.languages else ""
        found.append(((v.identifier or b"").decode(errors="replace"),
                      (v.name or b"").decode(errors="replace"), languages))
    return found


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


def _serve_forking(speaker: _Speaker, jobs: int, out: BinaryIO) -> None:
    """Read requests; fork a child for each, at most `jobs` at a time; relay replies."""
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, None)
    pending: bytes = b""
    queue: deque[tuple[int, str]] = deque()
    children: dict[int, tuple[int, int, list[bytes]]] = {}  # fd -> (id, pid, chunks)
    reading = True

    def start(request_id: int, text: str) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: speak from the state it was forked in, then leave
            code = 1
            try:
                os.close(r)
                status, payload = speaker.say(text)
                view = memoryview(_REPLY.pack(request_id, status, len(payload)) + payload)
                while view:
                    view = view[os.write(w, view):]
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        children[r] = (request_id, pid, [])
        selector.register(r, selectors.EVENT_READ, r)

    while reading or queue or children:
        while queue and len(children) < jobs:
            start(*queue.popleft())
        for key, _ in selector.select():
            if key.data is None:  # a request
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    reading = False
                    selector.unregister(0)
                    continue
                pending += chunk
                while len(pending) >= _REQUEST.size:
                    request_id, size = _REQUEST.unpack_from(pending)
                    if len(pending) < _REQUEST.size + size:
                        break
                    text = pending[_REQUEST.size: _REQUEST.size + size].decode("utf-8", "replace")
                    pending = pending[_REQUEST.size + size:]
                    queue.append((request_id, text))
                continue
            fd = key.data
            chunk = os.read(fd, 1 << 20)
            request_id, pid, chunks = children[fd]
            if chunk:
                chunks.append(chunk)
                continue
            selector.unregister(fd)
            os.close(fd)
            del children[fd]
            _, wait_status = os.waitpid(pid, 0)
            reply = b"".join(chunks)
            if os.waitstatus_to_exitcode(wait_status) != 0 or len(reply) < _REPLY.size:
                message = f"espeak-ng stopped while speaking (exit {wait_status})".encode()
                reply = _REPLY.pack(request_id, FAILED, len(message)) + message
            _send(out, reply)


def _serve_in_turn(speaker: _Speaker, out: BinaryIO) -> None:
    """Without fork: one phrase after another, in this process."""
    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return
        request_id, size = _REQUEST.unpack(head)
        text = stdin.read(size).decode("utf-8", "replace")
        status, payload = speaker.say(text)
        _send(out, _REPLY.pack(request_id, status, len(payload)) + payload)


def main(argv: list[str]) -> int:
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ["PULSE_SERVER"] = NO_SOUND_SERVER
    os.environ.pop("DISPLAY", None)
    sys.path.insert(0, argv[1])
    out = sys.stdout.buffer
    mode = argv[2]

    def ready(status: int, message: str) -> None:
        data = message.encode()
        _send(out, _READY.pack(status, len(data)) + data)

    try:
        from pyttsx3.drivers import _espeak  # loads libespeak-ng

        rate = _espeak.Initialize(_espeak.AUDIO_OUTPUT_SYNCHRONOUS, 500)
        if rate == -1:
            raise RuntimeError("espeak_Initialize failed")
    except Exception as e:  # noqa: BLE001 - the parent says what to install
        ready(NO_ENGINE, f"{type(e).__name__}: {e}")
        return 1
    if mode == "voices":
        ready(OK, str(rate))
        for found in _voices(_espeak):
            out.write(json.dumps(found).encode() + b"\n")
        out.flush()
        return 0
    voice, wpm, jobs = argv[3], int(argv[4]), int(argv[5])
    name = b"en"
    if voice:
        match = next((v for v in _voices(_espeak) if voice in (v[0], v[1])), None)
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
            _serve_forking(speaker, max(1, jobs), out)
        else:
            _serve_in_turn(speaker, out)
    except BrokenPipeError:  # the parent went away
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
