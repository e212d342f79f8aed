#!/usr/bin/env bash
# Install what the end-to-end browser test (tests/server/test_server_browser.py) needs: headless Chromium and
# its WebDriver from the Debian packages `chromium` and `chromium-driver`. Never fails the build: when the
# packages cannot be installed (not root, no apt, no network) the test skips with the reason.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "ci_browser_deps: chromium and chromedriver already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci_browser_deps: no apt-get; the browser test will skip"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ci_browser_deps: not root and no sudo; the browser test will skip"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if timeout 300 $SUDO apt-get update -qq >/dev/null 2>&1 \
   && timeout 600 $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
  echo "ci_browser_deps: installed $(chromium --version 2>/dev/null | head -1)"
else
  echo "ci_browser_deps: could not install chromium/chromium-driver; the browser test will skip"
fi
exit 0
