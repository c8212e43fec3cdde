#!/usr/bin/env bash
# Fetch the open IP data the enricher's integration test and benchmarks use,
# pinned npm packages of ip-location-db, into <repo>/.cache/geodata:
#   geo-whois-asn-country-mmdb/  country MMDBs (record {"country_code": "US"})
#   asn/                         asn-ipv4.csv, asn-ipv6.csv (first_ip,last_ip,asn,name)
# Idempotent: does nothing when this version is already there. Prints the
# licences every time, since they bind whoever uses the data.
#
# Without npm (or the registry) it warns and exits 0, so `make test` still
# runs on a laptop (the integration test then skips loudly); with
# FLOWPIPELINE_REQUIRE_SERVICES=1 (CI) it fails instead.
set -euo pipefail

version=2.3.2026061719
packages=(geo-whois-asn-country-mmdb asn)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="${FLOWPIPELINE_GEODATA:-$repo/.cache/geodata}"

unavailable() {
  if [[ "${FLOWPIPELINE_REQUIRE_SERVICES:-}" == 1 ]]; then
    echo "geodata: $1 (FLOWPIPELINE_REQUIRE_SERVICES=1 forbids skipping)" >&2
    exit 1
  fi
  echo "geodata: WARNING: $1; the enricher's integration test and real-data benchmarks will skip" >&2
  exit 0
}

for p in "${packages[@]}"; do
  dir="$dest/$p"
  if [[ -f "$dir/.version" && "$(cat "$dir/.version")" == "$version" ]]; then
    echo "geodata: @ip-location-db/$p@$version up to date in $dir"
    continue
  fi
  command -v npm >/dev/null || unavailable "npm not found (apt-get install npm)"
  # Fetch into a fresh directory, then swap it in, so an interrupted
  # download never leaves a half-filled directory that looks complete.
  tmp="$dir.tmp.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp"
  if ! tgz="$(cd "$tmp" && npm pack --silent "@ip-location-db/$p@$version" 2>"$tmp/npm.log")"; then
    cat "$tmp/npm.log" >&2
    rm -rf "$tmp"
    unavailable "npm pack @ip-location-db/$p@$version failed"
  fi
  tar -xzf "$tmp/$tgz" -C "$tmp" --strip-components=1
  rm -f "$tmp/$tgz" "$tmp/npm.log"
  echo "$version" > "$tmp/.version"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  trap - EXIT
  echo "geodata: @ip-location-db/$p@$version fetched into $dir"
done

# The licences, as the packages state them.
echo
echo "geodata licences:"
echo "- @ip-location-db/geo-whois-asn-country-mmdb: $(sed -n 's/.*"license": *"\([^"]*\)".*/\1/p' "$dest/geo-whois-asn-country-mmdb/package.json")"
echo "  (its README credits the NRO statistics it is built from, CC BY 4.0: $(tr -s '\n' ' ' < "$dest/geo-whois-asn-country-mmdb/NRO_LICENSE"))"
echo "- @ip-location-db/asn: CC BY 4.0, attribution required:"
for f in ROUTEVIEWS-LICENSE DBIP-LICENSE NRO_LICENSE; do
  [[ -f "$dest/asn/$f" ]] && sed 's/^/    /' "$dest/asn/$f" && echo
done
echo "  Attribution to show where the data is shown (the dashboards do):"
echo "  \"IP to country: ip-location-db, from RIR data by the NRO (nro.net), CC BY 4.0. AS numbers and names: ip-location-db asn, from RouteViews (routeviews.org), DB-IP (db-ip.com) and the NRO, CC BY 4.0.\""
