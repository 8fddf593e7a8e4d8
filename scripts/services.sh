# Private services for the tests (sourced by scripts/test.sh): a PostgreSQL cluster and
# an S3-compatible server, each in a temporary directory, on 127.0.0.1 and a free port,
# stopped and removed when the calling shell exits. Nothing is downloaded here (scripts/setup.sh --test installs).

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_postgres() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin port
  bin=$(pg_bin)
  if [[ -z $bin || ! -x $bin/initdb ]]; then
    echo "services: PostgreSQL is not installed (scripts/setup.sh --test installs it)" >&2
    return 1
  fi
  TAMIZ_PG_DIR=$(mktemp -d /tmp/tamiz-pg.XXXXXX)
  [[ $(id -u) == 0 ]] && chown postgres "$TAMIZ_PG_DIR"
  as_postgres "$bin/initdb" -D "$TAMIZ_PG_DIR/data" -U postgres -A trust --no-sync -E UTF8 \
    >"$TAMIZ_PG_DIR/initdb.log" 2>&1 || { cat "$TAMIZ_PG_DIR/initdb.log" >&2; return 1; }
  port=$(free_port)
  # fsync off: a test cluster is thrown away; durability is argued in the catalog.
  as_postgres "$bin/pg_ctl" -D "$TAMIZ_PG_DIR/data" -l "$TAMIZ_PG_DIR/server.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $TAMIZ_PG_DIR -c fsync=off -c full_page_writes=off -c max_connections=500" \
    start >/dev/null || { cat "$TAMIZ_PG_DIR/server.log" >&2; return 1; }
  export TAMIZ_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  echo "services: PostgreSQL on 127.0.0.1:$port ($TAMIZ_PG_DIR)" >&2
}

# An S3-compatible server (s3s-fs) over a temporary directory, with one bucket; the
# standard AWS variables point the server under test at it. s3s-fs keeps each
# object's metadata in one file named after the base64 of bucket and key, so a key
# longer than about 160 bytes fails there (ENAMETOOLONG, 500) though S3 takes 1024:
# the bucket name and the tests' prefixes are short.
start_s3() {
  local bin=.cache/s3s/bin/s3s-fs port
  if [[ ! -x $bin ]]; then
    echo "services: $bin is missing (scripts/setup.sh --test builds it)" >&2
    return 1
  fi
  TAMIZ_S3_DIR=$(mktemp -d /tmp/tamiz-s3.XXXXXX)
  mkdir -p "$TAMIZ_S3_DIR/data/tzb"
  port=$(free_port)
  "$bin" --host 127.0.0.1 --port "$port" --access-key tamiz-test --secret-key tamiz-test-secret \
    "$TAMIZ_S3_DIR/data" >"$TAMIZ_S3_DIR/server.log" 2>&1 &
  TAMIZ_S3_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=tamiz-test AWS_SECRET_ACCESS_KEY=tamiz-test-secret
  export TAMIZ_TEST_S3_BUCKET=tzb
  echo "services: s3s-fs on 127.0.0.1:$port ($TAMIZ_S3_DIR)" >&2
}

stop_services() {
  if [[ -n ${TAMIZ_S3_PID:-} ]]; then
    kill "$TAMIZ_S3_PID" 2>/dev/null || true
    rm -rf "$TAMIZ_S3_DIR"
  fi
  if [[ -n ${TAMIZ_PG_DIR:-} && -d $TAMIZ_PG_DIR ]]; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$TAMIZ_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TAMIZ_PG_DIR"
  fi
}
