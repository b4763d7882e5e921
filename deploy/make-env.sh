#!/bin/sh
# Every secret the deployment needs, made once: `deploy/make-env.sh > .env` (docker compose reads .env beside
# docker-compose.yml). Keep .env out of version control (it is in .gitignore) and readable by its owner only.
set -eu
# A letter, then hex digits: nats-server parses a password taken from its environment as a configuration token,
# which must read as a plain word (shared/access.py, new_password).
secret() { python3 -c 'import secrets; print("p" + secrets.token_hex(24))'; }
umask 077
for user in INGEST CLASSIFIER FOREIGN INDEX DERIVATIVES BOARD ALERTS RECORDER GATEWAY OPERATOR; do
  echo "NATS_PASSWORD_${user}=$(secret)"
done
echo "POSTGRES_PASSWORD=$(secret)"
echo "GATEWAY_TOKEN=$(secret)"
echo "GRAFANA_ADMIN_PASSWORD=$(secret)"
echo "# The host names browsers reach the gateway by (GATEWAY_ALLOWED_HOSTS), and other origins allowed to use it."
echo "GATEWAY_ALLOWED_HOSTS=localhost,127.0.0.1"
echo "GATEWAY_CORS_ORIGINS="
echo "# Alerts to a webhook (README, Webhook): its https:// URL, and the key its POSTs are signed with."
echo "ALERT_WEBHOOK_URL="
echo "ALERT_WEBHOOK_SECRET=$(secret)"
