#!/usr/bin/env bash
# The one place the Makefile installs Debian packages from:
#   scripts/install-system-packages.sh required|optional "WHAT NEEDS THEM" PACKAGE=PROBE ...
# PROBE is a command name (found on PATH) or an absolute path (exists); a package is missing when its probe
# fails. Missing packages are installed with apt-get when this runs as root (CI runs as root).
# Not root, or no apt-get: a `required` set is an error that prints the install command (exit 2); an
# `optional` set prints a note and exits 0, and the tests that need it skip and say so. This script never
# calls sudo itself: a make target does not ask for a password.
set -euo pipefail

kind=${1:?usage: $0 required|optional "what needs them" PACKAGE=PROBE ...}
what=${2:?usage: $0 required|optional "what needs them" PACKAGE=PROBE ...}
shift 2
case "$kind" in required|optional) ;; *) echo "error: $0: the first argument is required or optional, not $kind" >&2; exit 2;; esac

missing=()
for pair in "$@"; do
  package=${pair%%=*} probe=${pair#*=}
  if [[ $probe == /* ]]; then [[ -e $probe ]] && continue; else command -v "$probe" >/dev/null && continue; fi
  missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

list="${missing[*]}"
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "installing $list ($what)"
  # Try without refreshing the package lists first (fast when they are current), then with.
  if apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
     || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    exit 0
  fi
  echo "error: could not install $list ($what)" >&2
  exit 2
fi
how="sudo apt-get install $list"
command -v apt-get >/dev/null || how="install $list with your package manager"
if [[ $kind == optional ]]; then
  echo "note: $what: $list missing ($how); those tests will skip"
  exit 0
fi
echo "error: $what: $list missing: $how" >&2
exit 2
