#!/usr/bin/env bash
# Checks what the container image promises, without a container engine: the binary runs
# as the image's non-root uid (65532) on a read-only root filesystem, writing only to
# a scratch folder and /tmp (emptyDir volumes in Kubernetes; the image's /scratch is /mnt
# here, a folder the host has), with git present, and completes an embedded review there.
#   scripts/check-runtime.sh                 # builds the release binary first
#   scripts/check-runtime.sh path/to/binary  # checks a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-}"
if [ -z "$binary" ]; then
  cargo build --release --locked --bin deep-review
  binary=target/release/deep-review
fi
binary=$(realpath "$binary")
command -v git >/dev/null || { echo "git is missing: the image installs it, and workers need it" >&2; exit 1; }
command -v bwrap >/dev/null || { echo "bubblewrap is missing (scripts/services.sh installs it)" >&2; exit 1; }
command -v setpriv >/dev/null || { echo "setpriv (util-linux) is missing" >&2; exit 1; }

# As root outside, the sandbox gives the same view a pod has: / read-only, empty writable
# scratch and /tmp, and the process switched to uid 65532 with no capabilities.
inside='
set -eu
test "$(id -u)" = 65532 || { echo "not uid 65532: $(id -u)"; exit 1; }
if touch /should-not-be-writable 2>/dev/null; then echo "the root filesystem is writable"; exit 1; fi
mkdir -p /mnt/home /mnt/repository
cd /mnt/repository
git init -q -b main
git -c user.name=ci -c user.email=ci@invalid commit -q --allow-empty -m base
printf "def charge(card):\n    try:\n        pay(card)\n    except Exception:\n        pass\n" > app.py
git add app.py
git -c user.name=ci -c user.email=ci@invalid commit -q -m "add charge"
"$BINARY" review --repo /mnt/repository --out /mnt/out --quiet || test $? -le 2
test -s /mnt/out/report.md && test -s /mnt/out/report.json
grep -q "Verdict" /mnt/out/report.md
echo "runtime check passed: uid $(id -u), read-only root, review written to /mnt/out"
'
exec bwrap --die-with-parent --unshare-pid --ro-bind / / --proc /proc --dev /dev \
  --perms 1777 --tmpfs /mnt --perms 1777 --tmpfs /tmp --setenv DEEP_REVIEW_REVIEW__SCRATCH_DIRECTORY /mnt/checkouts \
  --setenv HOME /mnt/home --setenv XDG_DATA_HOME /mnt/data --setenv BINARY "$binary" \
  --unsetenv DEEP_REVIEW_REVIEW__LEDGER_FILE \
  -- setpriv --reuid 65532 --regid 65532 --clear-groups --inh-caps=-all --bounding-set=-all \
  sh -c "$inside"
