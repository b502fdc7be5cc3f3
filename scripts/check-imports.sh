#!/usr/bin/env bash
# Imports point one way only (DESIGN.md §1): cmd -> protocol/* -> broker -> cluster -> storage.
# Fails when a package imports a layer above it, or a protocol package imports cluster or storage.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
layer() { # prints the layer rank of an import path, or nothing for outside packages
  local p=${1#"$mod"/}
  [ "$p" = "$1" ] && return 0
  case "$p" in
    cmd/*) echo 5 ;;
    protocol/*) echo 4 ;;
    broker|broker/*) echo 3 ;;
    cluster|cluster/*) echo 2 ;;
    storage|storage/*) echo 1 ;;
    integration|integration/*) echo 6 ;;
    *) echo 0 ;;
  esac
}
bad=0
while read -r pkg imports; do
  from=$(layer "$pkg")
  for imp in $imports; do
    to=$(layer "$imp")
    [ -z "$to" ] && continue
    rel=${imp#"$mod"/}
    if [ "$to" -gt "$from" ]; then
      echo "upward import: $pkg -> $imp"; bad=1
    fi
    if [ "$from" = 4 ] && { [ "$to" = 2 ] || [ "$to" = 1 ]; }; then
      echo "protocol package reaches past the core: $pkg -> $imp"; bad=1
    fi
    case "$rel" in *util*|*common*) echo "no util/common packages: $imp"; bad=1 ;; esac
  done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./...)
[ "$bad" = 0 ] && echo "imports: one way only, ok"
exit "$bad"
