#!/usr/bin/env bash
# The README's quick start: create a repository in a temp dir, back up a
# sample folder twice (the second run is incremental), restore it and
# verify the round trip byte for byte, then verify every stored byte.
set -euo pipefail
cd "$(dirname "$0")/.."
cairn="$PWD/bin/cairn"
work=$(mktemp -d /tmp/cairn-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD="demo password"

echo "== sample data in $work/sample"
mkdir -p "$work/sample/docs/deep/er" "$work/sample/empty"
head -c 12000000 /dev/urandom > "$work/sample/big.bin"
for i in $(seq 1 200); do echo "note $i $(date +%s%N)" > "$work/sample/docs/note-$i.txt"; done
echo "hello" > "$work/sample/docs/deep/er/file with spaces.txt"
ln -s docs/note-1.txt "$work/sample/link-to-note"
ln "$work/sample/docs/note-2.txt" "$work/sample/hardlink-to-note-2"

echo "== cairn init"
"$cairn" init
echo "== cairn backup (first)"
"$cairn" backup "$work/sample" --tag demo
echo "== change one file, cairn backup (incremental)"
echo "changed" >> "$work/sample/docs/note-7.txt"
"$cairn" backup "$work/sample" --tag demo
echo "== cairn snapshots"
"$cairn" snapshots
echo "== cairn diff"
"$cairn" diff "$("$cairn" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')" latest
echo "== cairn restore latest"
"$cairn" restore latest --target "$work/restore"
diff -r --no-dereference "$work/sample" "$work/restore$work/sample"
echo "restored tree is identical to the source"
echo "== cairn check --read-data"
"$cairn" check --read-data
echo "demo OK"
