#!/usr/bin/env bash
# Smoke test a deployed gateway:   scripts/smoke.sh BASE_URL ADMIN_KEY
#
# BASE_URL is the stack's ApiUrl output (e.g. https://abc.execute-api.eu-west-1.amazonaws.com/dev/)
# ADMIN_KEY is the first admin key (Secrets Manager, see docs/deploy.md). Needs curl and python3.
# Mints a capped key, creates a thread, streams a turn with `curl -N` and checks that the events
# arrive incrementally (not in one buffered burst), finds the turn through search, reads usage,
# then revokes the key and deletes the thread. Keys are never printed. MODEL overrides the model
# (default: threadgate-local, the offline model every deployment serves).
set -euo pipefail

BASE_URL="${1:?usage: smoke.sh BASE_URL ADMIN_KEY}"
ADMIN_KEY="${2:?usage: smoke.sh BASE_URL ADMIN_KEY}"
BASE_URL="${BASE_URL%/}"
MODEL="${MODEL:-threadgate-local}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "-- $*"; }

# call METHOD PATH KEY [JSON]: writes the body to $WORK/body, prints the status code.
call() {
  local method="$1" path="$2" key="$3" data="${4:-}"
  local args=(-sS -o "$WORK/body" -w '%{http_code}' -X "$method" -H "x-api-key: $key")
  [[ -n "$data" ]] && args+=(-H 'content-type: application/json' --data "$data")
  curl "${args[@]}" "$BASE_URL$path"
}
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$WORK/body" "$1"; }

step "mint a capped key"
status=$(call POST /v1/keys "$ADMIN_KEY" '{"name":"smoke test","max_spend_usd":0.5,"end_user_id":"smoke-user"}')
[[ "$status" == 201 ]] || fail "POST /v1/keys answered $status: $(cat "$WORK/body")"
KEY=$(field 'd["secret"]'); KEY_ID=$(field 'd["id"]')

step "list models"
status=$(call GET /v1/models "$KEY")
[[ "$status" == 200 ]] || fail "GET /v1/models answered $status"
field "[m['id'] for m in d['data']].index('$MODEL')" >/dev/null || fail "model $MODEL is not served"

step "create a thread"
status=$(call POST /v1/threads "$KEY" '{"metadata":{"source":"smoke"}}')
[[ "$status" == 201 ]] || fail "POST /v1/threads answered $status: $(cat "$WORK/body")"
THREAD=$(field 'd["id"]')

step "stream a turn (curl -N) and time each event's arrival"
curl -sS -N -X POST "$BASE_URL/v1/threads/$THREAD/messages" \
  -H "x-api-key: $KEY" -H 'content-type: application/json' -H 'accept: text/event-stream' \
  --data "{\"model\":\"$MODEL\",\"max_tokens\":200,\"stream\":true,\"content\":\"Write three short sentences about lighthouse keepers who watch the fog roll in over the harbour at night while ships wait outside.\"}" \
  | python3 -u -c '
import sys, time
start = time.monotonic()
for line in iter(sys.stdin.readline, ""):  # line by line as it arrives (no read-ahead)
    if line.startswith("event:"):
        print("%.3f %s" % (time.monotonic() - start, line[len("event:"):].strip()), flush=True)
' > "$WORK/events"
python3 - "$WORK/events" <<'PY' || fail "the stream was not incremental or did not complete"
import sys
events = [(float(t), name) for t, name in (line.split() for line in open(sys.argv[1]))]
names = [name for _, name in events]
deltas = [t for t, name in events if name == "content_block_delta"]
print(f"   {len(events)} events, {len(deltas)} text deltas over {deltas[-1] - deltas[0]:.2f}s" if deltas else "   no deltas")
assert names and names[-1] == "qlaud.done", f"last event is {names[-1:]}"
assert "message_start" in names and len(deltas) >= 3, names
# Buffered delivery would hand every event over at once; streamed deltas arrive spread out.
assert deltas[-1] - deltas[0] >= 0.05 and len({round(t, 2) for t in deltas}) >= 3, "events arrived in one burst"
PY

step "search finds the turn (indexed from the DynamoDB stream within seconds)"
found=0
for _ in $(seq 1 15); do
  status=$(call GET "/v1/search?q=lighthouse%20keepers%20fog&thread_id=$THREAD" "$KEY")
  [[ "$status" == 200 ]] || fail "GET /v1/search answered $status: $(cat "$WORK/body")"
  if [[ "$(field 'len(d["data"])')" -gt 0 ]]; then found=1; break; fi
  sleep 1
done
[[ "$found" == 1 ]] || fail "the turn was not searchable after 15 s"

step "usage shows the turn within the cap"
status=$(call GET "/v1/keys/$KEY_ID/usage" "$ADMIN_KEY")
[[ "$status" == 200 ]] || fail "GET /v1/keys/{id}/usage answered $status"
field "'   %d usage event(s), spent %d micro-USD, reserved %d' % (len(d['events']), d['spent_micros'], d['reserved_micros'])"
[[ "$(field 'len(d["events"]) >= 1 and d["spent_micros"] <= 500000')" == True ]] || fail "no usage event or over cap"

step "clean up"
call DELETE "/v1/threads/$THREAD" "$KEY" >/dev/null
call DELETE "/v1/keys/$KEY_ID" "$ADMIN_KEY" >/dev/null
echo "OK: $BASE_URL streams, indexes and meters"
