#!/usr/bin/env bash
# Build the Debian package with cargo-deb (installed from crates.io if
# missing): target/debian/tidepool_<version>-1_<arch>.deb. The release
# binary writes its own manual pages first (`tidepool --man 1|5`), so they
# follow the command line and docs/configuration.md of this very build.
# Prints the package's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    cargo install cargo-deb --locked --quiet
fi
cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
for section in 1 5; do
    "$target_dir/release/tidepool" --man "$section" | gzip -9n \
        > "$target_dir/release/tidepool.$section.gz"
done
# --no-build: the binary above (stripped into the package: the release
# profile keeps line tables, 38 MB, for backtraces and profiles).
cargo deb --no-build --strip 2>&1 | tail -n 1
