#!/usr/bin/env bash
# Makes sure Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672, guest/guest) are running,
# installing them (and bubblewrap, for the agent sandbox) from Debian's packages when they
# are missing. Idempotent.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
# bubblewrap sandboxes agent processes (review.agent_isolation); the tests check it.
command -v bwrap >/dev/null || missing+=(bubblewrap)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis-server"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /tmp
fi

if ! rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
  echo "starting rabbitmq-server"
  rabbitmq-server -detached || true
fi

for _ in $(seq 1 120); do
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 \
    && rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
    echo "redis and rabbitmq are up"
    exit 0
  fi
  sleep 1
done
echo "redis or rabbitmq did not come up within 120 s" >&2
redis-cli -h 127.0.0.1 -p 6379 ping || true
rabbitmq-diagnostics status || true
exit 1
