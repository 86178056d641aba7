#!/usr/bin/env bash
# Installs Paradice and runs its main job: compile every spec and prove it against the installed headers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "building paradice (release)…"
swift build -c release --product paradice 2>&1 | tail -1
install -D -m 0755 .build/release/paradice /usr/local/bin/paradice
mkdir -p /usr/local/share/paradice
rm -rf /usr/local/share/paradice/Specs && cp -r Specs /usr/local/share/paradice/Specs
echo "installed /usr/local/bin/paradice with specs in /usr/local/share/paradice/Specs"
paradice spec list --specs /usr/local/share/paradice/Specs
paradice spec verify --specs /usr/local/share/paradice/Specs
