# .ci/chromium.sh: sourced by .ci/run. The web test (tests/integration/web.rs) loads
# vigil's pages in a real browser, Debian's headless chromium; install it
# when missing. Under CI=true a browser that cannot be installed fails the
# run here, and the test itself fails without one.
if ! command -v chromium >/dev/null 2>&1; then
    step "test servers: installing chromium (headless browser for tests/integration/web.rs)"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        run apt-get update -q || true
        run apt-get install -y -q --no-install-recommends chromium
    elif [ "${CI:-}" = true ]; then
        echo "chromium missing and cannot be installed (not root or no apt-get)" >&2
        exit 1
    else
        echo "cannot install chromium: the browser test will be skipped" >&2
    fi
else
    step "test servers: chromium present"
fi
