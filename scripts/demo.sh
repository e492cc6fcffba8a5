#!/usr/bin/env bash
# make demo: what portcullis does today, on the embedded local keystore, with
# the shipped example config. (Attaching a real encrypted volume joins this
# demo when the daemon lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=(node dist/src/cli/main.js --config examples/local.yaml)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Local keystore and KEK under /tmp/portcullis-example (created on first use, 0600)"
project=demo-project

step "portcullis key create --project $project --name demo-volume-key"
id=$("${cli[@]}" key create --project "$project" --name demo-volume-key)
echo "$id"

step "portcullis key get $id --project $project --output json --metadata-only"
"${cli[@]}" key get "$id" --project "$project" --output json --metadata-only

step "portcullis key store --type passphrase --project $project < (a passphrase)"
pass=$(printf 'correct horse battery staple' | "${cli[@]}" key store --type passphrase --project "$project" --name demo-passphrase)
echo "$pass"
printf 'read back: '; "${cli[@]}" key get "$pass" --project "$project" --output raw; echo

step "portcullis key list --project $project"
"${cli[@]}" key list --project "$project"

step "Another project sees none of it: portcullis key get $id --project someone-else"
if "${cli[@]}" key get "$id" --project someone-else; then echo "unexpected: another project read the key" >&2; exit 1; fi

step "The keystore holds only ciphertext: the key's hex does not appear in the database file"
hex=$("${cli[@]}" key get "$id" --project "$project")
# The key goes to the checker on stdin: never in argv or the environment.
printf '%s' "$hex" | node -e '
  const fs = require("fs");
  const hex = fs.readFileSync(0, "utf8").trim(), raw = Buffer.from(hex, "hex");
  for (const f of fs.readdirSync("/tmp/portcullis-example").filter((n) => n.startsWith("keystore.db"))) {
    const data = fs.readFileSync("/tmp/portcullis-example/" + f);
    if (data.includes(raw) || data.includes(Buffer.from(hex))) { console.error("unexpected: key bytes in " + f); process.exit(1); }
  }'
echo "ok: neither the key's hex nor its raw bytes are in /tmp/portcullis-example/keystore.db"

step "Clean up: portcullis key delete"
"${cli[@]}" key delete "$id" --project "$project"
"${cli[@]}" key delete "$pass" --project "$project"
echo "done"
