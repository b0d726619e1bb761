#!/usr/bin/env bash
# cairn against restic, side by side on this machine (bench/cairnbench):
# builds bin/cairn, installs restic v0.18.1 once into the cache, then runs
# the benchmark. Arguments go to cairnbench, e.g.
#   scripts/bench.sh -quick                   # small corpus, about a minute
#   scripts/bench.sh -datasets pg -json /tmp/pg.json
#   scripts/bench.sh -keep                    # keep the temporary repositories
#   scripts/bench.sh -datasets s3 -s3-delay 50ms   # S3 (MinIO) behind a latency proxy
#   scripts/bench.sh -datasets pgnights -nights 16 # a longer series of database nights
#   scripts/bench.sh -datasets realtree           # /usr/share and large files, local repos
# The corpus is generated once under ${CAIRN_CACHE:-$HOME/.cache/cairn}/bench-corpus.
# Repositories and restore targets go to /dev/shm when it has room (else
# $TMPDIR; -work DIR chooses).
# The s3 data set (in the default list) needs the MinIO server binary:
# scripts/minio.sh builds it once (a few minutes) and is quick afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${CAIRN_CACHE:-$HOME/.cache/cairn}"
restic_version=v0.18.1

make --no-print-directory build

restic="$cache/bin/restic"
if [ ! -x "$restic" ] || ! "$restic" version 2>/dev/null | grep -q "restic ${restic_version#v} "; then
	echo "bench: installing restic $restic_version into $cache/bin"
	mkdir -p "$cache/bin"
	GOBIN="$cache/bin" go install "github.com/restic/restic/cmd/restic@$restic_version"
fi

# The data sets of the run: cairnbench's default list unless -datasets is
# given; run scripts/minio.sh (idempotent) when s3 is among them.
datasets=pg,redis,files,s3,pgnights,realtree
prev=
for arg in "$@"; do
	case "$prev" in -datasets | --datasets) datasets=$arg ;; esac
	case "$arg" in -datasets=* | --datasets=*) datasets=${arg#*=} ;; esac
	prev=$arg
done
case ",${datasets// /}," in *,s3,*) ./scripts/minio.sh ;; esac

exec go run ./bench/cairnbench -restic "$restic" -cairn "$PWD/bin/cairn" "$@"
