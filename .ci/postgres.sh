# shellcheck shell=bash
# .ci/postgres.sh: a throw-away PostgreSQL cluster for the tests, sourced
# by .ci/run (and usable by hand: `. .ci/postgres.sh` in bash).
#
# Installs Debian's `postgresql` when missing (as root, with apt-get), runs
# initdb into a temporary directory as an unprivileged user (`nobody` when
# run as root), starts the server on 127.0.0.1 with an ephemeral port and
# password (SCRAM) authentication, and exports
#   VIGIL_TEST_DB=postgres://vigil:PASSWORD@127.0.0.1:PORT/postgres
# Tests create their own database on it (see src/store/mod.rs, `scratch`).
# The server is stopped when the sourcing shell exits (a trap, and a
# watchdog in case a later trap replaces it).
#
# `vigil_pg_pass` runs the second pass: the store's, sinks', scheduler's,
# status's and web view's unit tests and the e2e, web, sinks, scheduler and status tests again, with every store they
# open on PostgreSQL (VIGIL_TEST_STORE=postgres). (tests/integration/pg.rs runs on
# PostgreSQL in the first pass already.)
#
# Under CI=true a PostgreSQL that cannot be installed or started fails the
# run; elsewhere the PostgreSQL tests say SKIPPED.

vigil_pg_fail() {
    echo "postgres: $*" >&2
    if [ "${CI:-}" = true ]; then
        exit 1
    fi
    return 1
}

vigil_pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && printf '%s\n' "$dir"
}

vigil_pg_start() {
    local bin
    bin=$(vigil_pg_bin) || true
    if [ -z "$bin" ]; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            printf '\n==> test servers: installing postgresql\n'
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q || true
            apt-get install -y -q --no-install-recommends postgresql ||
                { vigil_pg_fail "apt-get install postgresql failed"; return 1; }
            bin=$(vigil_pg_bin) || true
        fi
    fi
    if [ -z "$bin" ]; then
        vigil_pg_fail "no PostgreSQL server binaries (apt-get install postgresql): its tests will be skipped"
        return 1
    fi
    local run_as=() owner
    owner=$(id -un)
    if [ "$(id -u)" -eq 0 ]; then
        # initdb refuses to run as root.
        owner=nobody
        run_as=(runuser -u nobody --)
    fi
    VIGIL_PG_DIR=$(mktemp -d /tmp/vigil-pg.XXXXXX)
    chmod 0755 "$VIGIL_PG_DIR"
    chown "$owner" "$VIGIL_PG_DIR"
    local password port
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$password" >"$VIGIL_PG_DIR/pwfile"
    chown "$owner" "$VIGIL_PG_DIR/pwfile"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '\n==> test servers: PostgreSQL (%s) on 127.0.0.1:%s in %s\n' "$bin" "$port" "$VIGIL_PG_DIR"
    if ! "${run_as[@]}" "$bin/initdb" -D "$VIGIL_PG_DIR/data" -U vigil -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 --pwfile="$VIGIL_PG_DIR/pwfile" \
        >"$VIGIL_PG_DIR/initdb.log" 2>&1; then
        cat "$VIGIL_PG_DIR/initdb.log" >&2
        vigil_pg_fail "initdb failed"
        return 1
    fi
    # Durability is not what these tests check; speed is welcome.
    if ! "${run_as[@]}" "$bin/pg_ctl" -D "$VIGIL_PG_DIR/data" -l "$VIGIL_PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$VIGIL_PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null; then
        cat "$VIGIL_PG_DIR/server.log" >&2
        vigil_pg_fail "the server did not start"
        return 1
    fi
    VIGIL_PG_BIN=$bin
    VIGIL_PG_RUN_AS=("${run_as[@]}")
    export VIGIL_PG_DIR VIGIL_PG_BIN
    export VIGIL_TEST_DB="postgres://vigil:${password}@127.0.0.1:${port}/postgres"
    # pg_ctl for tests that stop and start the server mid-run.
    export VIGIL_TEST_PG_CTL="${run_as[*]} $bin/pg_ctl -D $VIGIL_PG_DIR/data -l $VIGIL_PG_DIR/server.log"
    trap vigil_pg_stop EXIT
    # Stops the server when this shell is gone, whatever its traps became.
    (
        parent=$$
        while kill -0 "$parent" 2>/dev/null; do sleep 2; done
        "${run_as[@]}" "$bin/pg_ctl" -D "$VIGIL_PG_DIR/data" -m immediate stop >/dev/null 2>&1
        rm -rf "$VIGIL_PG_DIR"
    ) </dev/null >/dev/null 2>&1 &
    echo "VIGIL_TEST_DB=postgres://vigil:***@127.0.0.1:${port}/postgres"
}

vigil_pg_stop() {
    [ -n "${VIGIL_PG_DIR:-}" ] && [ -d "$VIGIL_PG_DIR/data" ] || return 0
    "${VIGIL_PG_RUN_AS[@]}" "$VIGIL_PG_BIN/pg_ctl" -D "$VIGIL_PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$VIGIL_PG_DIR"
}

# The second pass: the same tests with every store on PostgreSQL.
vigil_pg_pass() {
    if [ -z "${VIGIL_TEST_DB:-}" ]; then
        vigil_pg_fail "no test server: second pass skipped"
        return 0
    fi
    printf '\n==> test (second pass, stores on PostgreSQL)\n'
    VIGIL_TEST_STORE=postgres cargo test --release --lib -- store:: sink:: scheduler:: status:: web::
    VIGIL_TEST_STORE=postgres cargo test --release --test integration -- e2e:: web:: sinks:: scheduler:: status::
}

vigil_pg_start || true
