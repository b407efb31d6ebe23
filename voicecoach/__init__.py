"""voicecoach: a voice-guided exercise coach."""

__version__ = "0.1.0"

SAMPLE_RATE = 22050
"""Every stage works at this rate: espeak-ng's own, so speech is never resampled."""
LEAD_IN_S = 0.25
"""A breath of silence before the first word of every session, so no player clips it."""
