#!/usr/bin/env bash
# Set up voicecoach on a fresh Debian machine: system packages, then a virtual
# environment in .venv with voicecoach and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  espeak-ng          # the voice (libespeak-ng1, loaded by pyttsx3's binding)
  pulseaudio         # a sound server: the playback tests run one with a null sink
  pulseaudio-utils   # pactl and parec, to drive and record it
  chromium           # a real browser: the tests drive `voicecoach serve`'s page in it
  chromium-driver    # ... through Selenium's WebDriver
  fonts-dejavu-core  # text in that browser (its screenshots), without the recommended fonts
  lame               # the benchmark's peers: Debian's command-line encoders
  vorbis-tools       # (oggenc)
  flac
)
python_ok=1
python3 -c 'import ensurepip, venv' 2>/dev/null || { apt_packages+=(python3 python3-venv); python_ok=0; }

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing system packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ $python_ok -eq 1 ] || hash -r

# The Python side, skipped when .venv already holds this very pyproject.toml's install.
stamp=.venv/.voicecoach-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/voicecoach ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "Installing voicecoach and its Python packages into .venv (a minute or two the first time)" >&2
if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,neural]"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup failed: the pip output above says why" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "voicecoach is installed in .venv. Next: source .venv/bin/activate, then voicecoach --help" >&2
