#!/usr/bin/env bash
# Starts a Kafka-protocol broker on 127.0.0.1:9092 for development and CI: tansu with
# in-memory storage. Installs tansu from crates.io the first time (about 9 minutes on two
# cores; cached in ~/.cargo/bin afterwards). Does nothing when a broker already answers.
#
#   bash scripts/kafka.sh          start (or keep) the broker
#   bash scripts/kafka.sh stop     stop the broker this script started
#
# Real Apache Kafka, for those with Docker: deploy/docker-compose.yml.
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"
addr="127.0.0.1:9092"
state="${XDG_RUNTIME_DIR:-/tmp}/saas-rs-tansu"
mkdir -p "$state"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/9092") 2>/dev/null; }

if [[ "${1:-start}" == "stop" ]]; then
  if [[ -f "$state/pid" ]] && kill "$(cat "$state/pid")" 2>/dev/null; then
    echo "tansu stopped"
  fi
  rm -f "$state/pid"
  exit 0
fi

if answers; then
  echo "a broker already answers on $addr"
  exit 0
fi

if ! command -v tansu >/dev/null 2>&1; then
  echo "installing tansu (once, about 9 minutes; cached in ~/.cargo/bin)"
  cargo install tansu --locked --features dynostore --quiet
fi

nohup tansu broker \
  --listener-url "tcp://$addr" \
  --advertised-listener-url "tcp://$addr" \
  --storage-engine memory://tansu/ \
  >"$state/log" 2>&1 &
echo $! >"$state/pid"

for _ in $(seq 1 100); do
  if answers; then
    echo "tansu listening on $addr (log: $state/log)"
    exit 0
  fi
  sleep 0.1
done
echo "tansu did not start; its log:" >&2
cat "$state/log" >&2
exit 1
