#!/usr/bin/env bash
# Ensures the MinIO server binary the S3 backend tests run against exists,
# building the pinned version with `go install` if it is missing or another
# version. Idempotent: a matching binary is left alone.
#
#   scripts/minio.sh            # -> ${CAIRN_CACHE:-$HOME/.cache/cairn}/bin/minio
#
# The tests look for $CAIRN_MINIO first, then that path. Without a binary
# they skip, except with CI=true, where they fail.
set -euo pipefail

version=v0.0.0-20260212201848-7aac2a2c5b7c
cache=${CAIRN_CACHE:-$HOME/.cache/cairn}
bin=$cache/bin/minio

have_version() {
	# `go version -m` reads the module version recorded in the binary.
	[ -x "$1" ] && go version -m "$1" 2>/dev/null |
		awk -v v="$version" '$1 == "mod" && $2 == "github.com/minio/minio" && $3 == v { ok = 1 } END { exit !ok }'
}

if [ -n "${CAIRN_MINIO:-}" ]; then
	if [ -x "$CAIRN_MINIO" ]; then
		echo "minio: $CAIRN_MINIO (from CAIRN_MINIO)"
		exit 0
	fi
	echo "minio: CAIRN_MINIO=$CAIRN_MINIO is not an executable file" >&2
	exit 1
fi

if have_version "$bin"; then
	echo "minio: $bin ($version)"
	exit 0
fi

echo "minio: building github.com/minio/minio@$version into $cache/bin (takes a few minutes)"
mkdir -p "$cache/bin"
# Outside any module, so the repository's go.mod is not involved.
(cd / && GOBIN="$cache/bin" GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$version")
have_version "$bin" || { echo "minio: $bin was not built" >&2; exit 1; }
echo "minio: $bin ($version)"
