"""The `voicecoach` command's first lines: Ctrl-C, SIGTERM and SIGHUP are handled before
the program is imported (click, numpy, the pipeline: about 0.1 s), so a stop that comes
while Python loads it ends it with one line too, never a traceback."""

from __future__ import annotations


def main() -> None:
    from .stops import ignored_from_now, interrupted, stop_on_signals

    stop_on_signals()
    try:
        from .cli import main as run

        run()
    except KeyboardInterrupt as e:  # before the CLI itself took over (it says so itself)
        interrupted(e)
    finally:
        ignored_from_now()


if __name__ == "__main__":
    main()
