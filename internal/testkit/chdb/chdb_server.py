"""Runs SQL through chDB (the ClickHouse engine in-process) for Go tests.

Protocol, one JSON object per line:
  stdin:  {"sql": "...", "format": "JSONEachRow"}
  stdout: {"data": "..."} or {"error": "..."}
The first stdout line says whether chDB loaded: {"ready": "<version>"} or
{"unavailable": "..."}. The process exits when stdin closes.
"""
import json
import sys


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    if len(sys.argv) != 2:
        send({"unavailable": "usage: chdb_server.py SESSION_DIR"})
        return 2
    try:
        import chdb
        from chdb import session
    except Exception as e:  # ImportError, or a broken native library
        send({"unavailable": "cannot import chdb (%s)" % e})
        return 0
    try:
        sess = session.Session(sys.argv[1])
    except Exception as e:
        send({"unavailable": "cannot open a chDB session in %s: %s" % (sys.argv[1], e)})
        return 0
    send({"ready": getattr(chdb, "__version__", "unknown")})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            res = sess.query(req["sql"], req.get("format") or "CSV")
            # Binary strings (raw addresses) are not UTF-8; the Go side only
            # reads text results, so replace what does not decode.
            send({"data": res.bytes().decode("utf-8", "replace")})
        except Exception as e:
            send({"error": str(e)})
    sess.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
