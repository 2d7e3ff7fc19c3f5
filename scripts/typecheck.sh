#!/usr/bin/env bash
# mypy (strict, pyproject's settings) over the package as it installs: cascade/ plus stages/
# and adapters/ as cascade.stages and cascade.adapters. mypy cannot follow setuptools'
# package-dir mapping, so this checks a temporary tree of symlinks with that layout; an
# error in cascade/stages/x.py is in stages/x.py here (cascade/adapters/ -> adapters/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/cascade"
for entry in "$root"/cascade/*; do
  ln -s "$entry" "$tree/cascade/"
done
ln -s "$root/stages" "$tree/cascade/stages"
ln -s "$root/adapters" "$tree/cascade/adapters"
cd "$tree"
mypy --config-file "$root/pyproject.toml" --cache-dir "$tree/.mypy_cache" cascade "$@"
