# shellcheck shell=bash
# .ci/tls.sh: the servers of the notification handler tests (sourced by
# .ci/run, in its test-servers part). tests/integration/notify.rs runs aiosmtpd with
# STARTTLS/TLS and AUTH and an HTTPS server on Python's http.server, with
# certificates from a CA it makes with the openssl CLI. Installs Debian's
# python3-aiosmtpd and openssl when missing; under CI=true, a server that is
# still missing fails the run (the tests would fail on it too).

tls_missing() {
    local missing=()
    /usr/bin/python3 -c 'import aiosmtpd, ssl, http.server' >/dev/null 2>&1 ||
        missing+=(python3-aiosmtpd)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    printf '%s\n' "${missing[@]}"
}

tls_need=()
while IFS= read -r deb; do
    [ -n "$deb" ] && tls_need+=("$deb")
done < <(tls_missing)
if [ "${#tls_need[@]}" -gt 0 ]; then
    printf '\n==> notify test servers: installing %s\n' "${tls_need[*]}"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q || true
        apt-get install -y -q --no-install-recommends "${tls_need[@]}"
    else
        echo "cannot install ${tls_need[*]} (not root or no apt-get)" >&2
    fi
    tls_need=()
    while IFS= read -r deb; do
        [ -n "$deb" ] && tls_need+=("$deb")
    done < <(tls_missing)
fi
if [ "${#tls_need[@]}" -gt 0 ]; then
    if [ "${CI:-}" = true ]; then
        echo "CI=true: ${tls_need[*]} missing; the notification handler tests need them" >&2
        exit 1
    fi
    echo "${tls_need[*]} missing: the notification handler tests will be skipped" >&2
else
    printf '\n==> notify test servers: aiosmtpd, python3 ssl, openssl present\n'
fi
unset tls_need deb
