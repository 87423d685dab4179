#!/usr/bin/env bash
# Rebuilds data/corpus.txt from the license texts Debian's base-files package installs in
# /usr/share/common-licenses (present on every Debian system and on CI's image), and checks that
# the result is byte-for-byte the corpus the repository ships. A mismatch means the machine's
# base-files differs from the one recorded in README.md: the committed corpus.txt stays the reference.
# Usage: data/assemble-corpus.sh [OUT]   (default: data/corpus.txt beside this script)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/corpus.txt}
src=/usr/share/common-licenses
expected_sha256=8a6ce98354e15bb10b6281453015c78a3a527bf86d1d6d0d57b2b9bf3387e854

# Fixed order; the GPL, LGPL and GFDL symbolic links are left out because they repeat the
# versioned files they point to.
files=(Apache-2.0 Artistic BSD CC0-1.0 GFDL-1.2 GFDL-1.3 GPL-1 GPL-2 GPL-3 LGPL-2 LGPL-2.1 LGPL-3 MPL-1.1 MPL-2.0)

for f in "${files[@]}"; do
  [[ -f $src/$f && -r $src/$f ]] || { echo "error: $src/$f is missing or unreadable (Debian's base-files installs it)" >&2; exit 1; }
done

tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
for f in "${files[@]}"; do
  cat "$src/$f"
  printf '\n' # a blank line between texts; some do not end with one
done >"$tmp"

actual=$(sha256sum "$tmp" | cut -d' ' -f1)
if [[ $actual != "$expected_sha256" ]]; then
  echo "error: assembled corpus has SHA-256 $actual, expected $expected_sha256" >&2
  echo "       (this machine's /usr/share/common-licenses differs from the recorded base-files version;" >&2
  echo "        use the committed data/corpus.txt)" >&2
  exit 1
fi
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out ($(wc -c <"$out") bytes, sha256 $actual)"
