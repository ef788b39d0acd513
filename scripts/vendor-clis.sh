#!/usr/bin/env bash
# Installs the real vendor agent CLIs (Claude Code, Codex, Gemini CLI) at the versions the
# tests are written against, into DIR (default: $DEEP_REVIEW_VENDOR_CLIS, else a cache
# folder outside the checkout, so fresh clones share it), and prints DIR's bin folder.
# Idempotent and cached: a second run with the same versions installs nothing.
#
# Exit codes: 0 installed (or already there); 75 the npm registry cannot be reached (the
# caller may skip the real-CLI tests, loudly); anything else is a real failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Bump these together with the event-stream parsing in crates/worker/src/vendor_cli.rs.
packages=(
  "@anthropic-ai/claude-code@2.1.197"
  "@openai/codex@0.171.0"
  "@google/gemini-cli@0.61.0"
)

directory=${1:-${DEEP_REVIEW_VENDOR_CLIS:-${XDG_CACHE_HOME:-$HOME/.cache}/deep-review/vendor-clis}}
mkdir -p "$directory"
directory=$(cd "$directory" && pwd)
stamp="$directory/installed-versions"
wanted=$(printf '%s\n' "${packages[@]}")

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
  && [ -x "$directory/node_modules/.bin/claude" ] \
  && [ -x "$directory/node_modules/.bin/codex" ] \
  && [ -x "$directory/node_modules/.bin/gemini" ]; then
  echo "$directory/node_modules/.bin"
  exit 0
fi

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "installing Node.js and npm" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

# A registry that does not answer is the one reason to skip; say so plainly.
if ! timeout 60 npm view "${packages[0]}" version >/dev/null 2>&1; then
  echo "the npm registry cannot be reached: the real vendor CLIs cannot be installed" >&2
  exit 75
fi

echo "installing ${packages[*]} into $directory" >&2
rm -f "$stamp"
# Each CLI ships its native binary in a platform package it depends on. Other packages'
# install scripts (native add-ons Gemini CLI can do without) are not run; Claude Code's
# postinstall only copies its binary out of that platform package, so it is run here.
npm install --prefix "$directory" --no-audit --no-fund --ignore-scripts --loglevel=error \
  "${packages[@]}" >&2
(cd "$directory/node_modules/@anthropic-ai/claude-code" && node install.cjs >&2)
for cli in claude codex gemini; do
  "$directory/node_modules/.bin/$cli" --version >&2
done
printf '%s\n' "$wanted" > "$stamp"
echo "$directory/node_modules/.bin"
