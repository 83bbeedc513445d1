#!/bin/sh
# Container entrypoint: create a throwaway cluster on first start (user
# postgres, no password, trust auth from anywhere), then run the server as
# PID 1. Extra arguments are passed to postgres (e.g. -c log_statement=all).
# Settings favour speed over durability: test data is disposable.
set -eu

# initdb and postgres refuse to run as root. setpriv execs in place, so the
# server itself becomes PID 1 and gets docker's stop signal directly (runuser
# would stay PID 1 and ignore it, making every `docker stop` wait 10 s).
as_postgres="setpriv --reuid=postgres --regid=postgres --init-groups"

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # UTF8 explicitly: the image has no LANG, and initdb would pick SQL_ASCII.
    $as_postgres initdb -D "$PGDATA" -U postgres --auth=trust --no-sync \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    printf 'host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n' >>"$PGDATA/pg_hba.conf"
fi

# The server logs "database system is ready to accept connections" on stderr;
# the tests wait for that line.
exec $as_postgres postgres -D "$PGDATA" \
    -c listen_addresses='*' \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 \
    "$@"
