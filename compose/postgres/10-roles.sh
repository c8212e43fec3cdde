#!/usr/bin/env bash
# Least-privilege roles for the postgres stacks. The postgres image runs this
# once, from /docker-entrypoint-initdb.d, when the data directory is empty,
# with POSTGRES_USER (the superuser, for administration only) and
# POSTGRES_DB set, and psql talking to the local server.
#
#   inserter role: LOGIN, not a superuser; may create tables in schema public
#     and so owns everything the inserter creates (flows, its daily
#     partitions, flows_5m, kafka_offsets, flows_scaled).
#   grafana role: LOGIN, SELECT only, on the tables that exist and (default
#     privileges) on every table the inserter role creates later, such as
#     tomorrow's partition. Its sessions are read-only and a statement is
#     cancelled after POSTGRES_GRAFANA_STATEMENT_TIMEOUT, so a slow dashboard
#     query cannot hold its locks on flows for long.
#
# Names and passwords come from compose/.env. Running it again is harmless.
set -Eeo pipefail

for v in POSTGRES_USER POSTGRES_DB POSTGRES_INSERTER_USER POSTGRES_INSERTER_PASSWORD \
	POSTGRES_GRAFANA_USER POSTGRES_GRAFANA_PASSWORD POSTGRES_GRAFANA_STATEMENT_TIMEOUT; do
	if [ -z "${!v}" ]; then
		echo "10-roles.sh: $v is not set; set it in compose/.env and pass it to the postgres service" >&2
		false
	fi
done

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB" \
	--set db="$POSTGRES_DB" \
	--set inserter="$POSTGRES_INSERTER_USER" --set inserter_password="$POSTGRES_INSERTER_PASSWORD" \
	--set grafana="$POSTGRES_GRAFANA_USER" --set grafana_password="$POSTGRES_GRAFANA_PASSWORD" \
	--set grafana_timeout="$POSTGRES_GRAFANA_STATEMENT_TIMEOUT" <<'SQL'
SELECT format('CREATE ROLE %I', :'inserter') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'inserter') \gexec
SELECT format('CREATE ROLE %I', :'grafana') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'grafana') \gexec
ALTER ROLE :"inserter" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'inserter_password';
ALTER ROLE :"grafana" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'grafana_password';

-- Grafana: read-only sessions (a second guard besides the grants), and no
-- statement or idle transaction that holds locks for long.
ALTER ROLE :"grafana" SET default_transaction_read_only = on;
ALTER ROLE :"grafana" SET statement_timeout = :'grafana_timeout';
ALTER ROLE :"grafana" SET idle_in_transaction_session_timeout = '60s';

-- Nobody but these roles connects; nobody else creates objects or temporary
-- tables in this database.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"inserter", :"grafana";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"inserter";
GRANT USAGE ON SCHEMA public TO :"grafana";

-- SELECT on what exists, and on what the inserter role creates from now on
-- (partitions included: they are created by the inserter role).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"grafana";
ALTER DEFAULT PRIVILEGES FOR ROLE :"inserter" IN SCHEMA public GRANT SELECT ON TABLES TO :"grafana";
SQL
