#!/usr/bin/env bash
# Regenerates the FFM bindings in java/hspmn/src/main/java/io/hspmn/ffi from native/include/hspmn.h with
# jextract (22 or later), then points their symbol lookup at our loader (io.hspmn.NativeLibrary),
# which finds the library, checks its ABI version and explains a failure.
# The committed bindings were written by hand in jextract 22's layout because jextract could not be
# installed where they were first made; BindingsLockstepTest checks them against the header either way.
#   usage: ci/bindings.sh            (jextract on PATH, or JEXTRACT=/path/to/bin/jextract)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
header=native/include/hspmn.h
out=java/hspmn/src/main/java
pkg=io.hspmn.ffi
dir="$out/${pkg//.//}"

jextract="${JEXTRACT:-$(command -v jextract || true)}"
if [ -z "$jextract" ] || [ ! -x "$jextract" ]; then
  echo "bindings: jextract was not found (not on PATH and JEXTRACT not set); the bindings in $dir" >&2
  echo "bindings: were NOT regenerated. Install jextract 22+ from https://jdk.java.net/jextract/ and rerun." >&2
  exit 1
fi

# Only the header's own declarations: the public functions, the structs, the enum constants and macros.
args=()
for f in $(grep -oE '^HSPMN_API[^(]*\bhspmn_[a-z0-9_]+\(' "$header" | grep -oE 'hspmn_[a-z0-9_]+\($' | tr -d '('); do
  args+=(--include-function "$f")
done
for s in $(grep -oE '^typedef struct hspmn_[a-z_]+ \{' "$header" | awk '{print $3}'); do
  args+=(--include-struct "$s")
done
for c in $(grep -oE '^\s+HSPMN_[A-Z0-9_]+ = [0-9]+' "$header" | awk '{print $1}') \
         $(grep -oE '^#define HSPMN_[A-Z0-9_]+ [0-9]+' "$header" | awk '{print $2}'); do
  args+=(--include-constant "$c")
done
for t in int32_t int64_t uint64_t; do
  args+=(--include-typedef "$t")
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$jextract" --target-package "$pkg" --header-class-name hspmn_h --output "$tmp" "${args[@]}" "$header"

# The one deviation from jextract's output: symbols come from our loader, not the loader lookup.
perl -0pi -e 's/static final SymbolLookup SYMBOL_LOOKUP = .*?;/static final SymbolLookup SYMBOL_LOOKUP = io.hspmn.NativeLibrary.lookup();/s' \
  "$tmp/${pkg//.//}/hspmn_h.java"
grep -q 'SYMBOL_LOOKUP = io.hspmn.NativeLibrary.lookup();' "$tmp/${pkg//.//}/hspmn_h.java" || {
  echo "bindings: could not patch the SYMBOL_LOOKUP line of hspmn_h.java; jextract's output changed" >&2
  exit 1
}

rm -f "$dir"/*.java
mkdir -p "$dir"
cp "$tmp/${pkg//.//}"/*.java "$dir"/
echo "bindings: regenerated $(ls "$dir"/*.java | wc -l) files in $dir with $("$jextract" --version 2>&1 | head -1)"
echo "bindings: run mvn -pl java/hspmn verify (BindingsLockstepTest) to check them against $header"
