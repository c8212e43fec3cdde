#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (see pom.xml) into <repo>/.cache/kafka/libs
# for the real-broker tests in internal/testkit/testenv. Idempotent: does nothing when
# the jars of this pom are already there. Needs java and mvn (Maven Central).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
libs="${FLOWPIPELINE_KAFKA_LIBS:-$repo/.cache/kafka/libs}"
stamp="$libs/.complete"
pom="$here/pom.xml"

# The stamp holds a hash of the pom: changing the Kafka version refetches.
want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "kafka libs up to date in $libs"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch.sh: mvn not found; install Maven 3 (apt-get install maven)" >&2; exit 1; }

# Fetch into a fresh directory, then swap it in, so an interrupted download
# never leaves a half-filled libs dir that looks complete.
tmp="$libs.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$(dirname "$libs")"
# (sed: Debian's mvn prints colour codes even in batch mode.)
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'

ls "$tmp"/kafka_2.13-*.jar >/dev/null
echo "$want" > "$tmp/.complete"
rm -rf "$libs"
mv "$tmp" "$libs"
trap - EXIT
echo "kafka libs fetched into $libs ($(ls "$libs" | wc -l) jars)"
