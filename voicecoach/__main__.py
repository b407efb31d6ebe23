"""`python -m voicecoach`: the same as the `voicecoach` command."""

from .launch import main

main()
