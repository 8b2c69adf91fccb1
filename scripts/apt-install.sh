#!/usr/bin/env bash
# Installs Debian packages for the scripts (root, or through sudo), refreshing the package
# lists first: on a fresh machine they are missing or stale.
#   scripts/apt-install.sh PACKAGE...
set -euo pipefail
if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq "$@" >&2
