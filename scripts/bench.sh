#!/usr/bin/env bash
# cairn against restic, side by side on this machine (bench/cairnbench):
# builds bin/cairn, installs restic v0.18.1 once into the cache, then runs
# the benchmark. Arguments go to cairnbench, e.g.
#   scripts/bench.sh -quick                   # small corpus, about a minute
#   scripts/bench.sh -datasets pg -json /tmp/pg.json
#   scripts/bench.sh -keep                    # keep the temporary repositories
# The corpus is generated once under ${CAIRN_CACHE:-$HOME/.cache/cairn}/bench-corpus.
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

exec go run ./bench/cairnbench -restic "$restic" -cairn "$PWD/bin/cairn" "$@"
