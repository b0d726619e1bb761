#!/usr/bin/env bash
# Installs what builds and tests need, idempotently. Safe to run often:
# every step checks first. Go modules are fetched by `go mod download`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v setfattr >/dev/null || need_apt+=(attr)
command -v python3 >/dev/null || need_apt+=(python3)
# PostgreSQL 15 server and client tools (initdb/pg_ctl live in
# /usr/lib/postgresql/15/bin), pgbench, and redis-server for the
# integration tests; each test starts its own server on 127.0.0.1.
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql postgresql-contrib)
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
	else
		echo "install-deps: please install: ${need_apt[*]}" >&2
	fi
fi
go mod download

# The MinIO server the S3 tests run against, built once per machine and
# cached outside the repository (about 4 minutes on 2 cores the first time).
./scripts/minio.sh
echo "install-deps: ok"
