#!/usr/bin/env bash
# Install hookline with plain `pip install .` into a scratch venv, then, from another directory,
# serve it and run the seed's curl: proves the wheel carries the app and its templates and that
# nothing needs the source tree.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$scratch"' EXIT

python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet "$repo"
cd "$scratch"
"$scratch/venv/bin/hookline" --version

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOOKLINE_DATA_DIR="$scratch/data" "$scratch/venv/bin/hookline" serve --port "$port" >"$scratch/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/myapp/health" >/dev/null 2>&1 && break
  sleep 0.5
done
answer=$(curl -sS -X POST -d "order_id=1234&product_name=example" "http://localhost:$port/myapp/webhook")
echo "seed curl answered: $answer"
python3 -c 'import json,sys; assert json.loads(sys.argv[1]) == {"status": "success", "message": "Webhook processed"}' "$answer"
curl -fsS "http://127.0.0.1:$port/myapp/" | grep -q "<h1>hookline"
site=$("$scratch/venv/bin/python" -c 'import hookline, pathlib; print(pathlib.Path(hookline.__file__).parent)')
if find "$site" \( -name '.service' -o -name '*.sqlite*' -o -name '*.table' -o -name 'py4web' -type d \) | grep -q .; then
  echo "runtime state was written into site-packages" >&2
  exit 1
fi
echo "smoke: installed package serves the seed from $scratch"
