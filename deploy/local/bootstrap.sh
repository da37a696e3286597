#!/usr/bin/env bash
# What `make install` needs from the machine beyond Python: PostgreSQL's server binaries
# (when no server answers and none is installed), Debian's docker-compose (validates
# docker-compose.yml), kcat (reads the local topics in a test), chromium (renders /docs in
# a test) and prometheus (promtool
# checks and tests the alert rules; the server runs in a test and under `make up`). Java 17
# and Maven fetch and run Apache Kafka; they are checked, not installed.
set -euo pipefail

missing=()
pg_binaries() {
  command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
pg_answers() {
  command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432 -t 2
}
if [ -z "${DATABASE_URL:-}" ] && ! pg_answers && ! pg_binaries; then missing+=(postgresql); fi
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
# Headless Chromium renders each service's /docs in a test (no network but the service).
[ -x /usr/bin/chromium ] || missing+=(chromium)
need_prometheus=0
if ! command -v promtool >/dev/null 2>&1 || ! { command -v prometheus || [ -x /usr/bin/prometheus ]; } >/dev/null 2>&1; then
  need_prometheus=1
fi

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
policy=/usr/sbin/policy-rc.d
added_policy=0
remove_policy() {
  if [ "$added_policy" -eq 1 ]; then $sudo_cmd rm -f "$policy"; fi
}
trap remove_policy EXIT

# Debian's prometheus package starts a system Prometheus from its postinst (init script or
# systemd unit) on 0.0.0.0:9090: the port `make up` uses, and a failing start fails the
# install where there is no init system. The stack and the suite run their own, so service
# starts are denied for this install (invoke-rc.d's policy layer: a policy-rc.d exiting
# 101), unless a policy is already in place (containers usually have one). Without its
# recommends (node exporter and its timers), which nothing here needs.
install_prometheus() {
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# make install (deploy/local/bootstrap.sh): no service starts\nexit 101\n' |
      $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod 755 "$policy"
    added_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  remove_policy
  added_policy=0
}

if [ ${#missing[@]} -gt 0 ] || [ "$need_prometheus" -eq 1 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    [ "$need_prometheus" -eq 0 ] || echo "installing Debian package: prometheus (promtool and the server)"
    [ ${#missing[@]} -eq 0 ] || echo "installing Debian packages: ${missing[*]}"
    $sudo_cmd apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
      # The package's own cluster is not needed: the stack starts a throwaway one.
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    [ "$need_prometheus" -eq 0 ] || install_prometheus
  else
    missing_all=("${missing[@]}")
    [ "$need_prometheus" -eq 0 ] || missing_all+=(prometheus)
    echo "warning: no apt-get; install ${missing_all[*]} yourself (or set DATABASE_URL)" >&2
  fi
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 ||
    echo "warning: no $tool: the local Apache Kafka needs Java 17+ and Maven (or set KAFKA_BOOTSTRAP_SERVERS)" >&2
done
