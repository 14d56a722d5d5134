#!/usr/bin/env bash
# Copies the GraphiQL assets that the page of api/http/graphiql.py (Strawberry's, plus the
# graphql-ws client for subscriptions) loads from unpkg into api/http/static/vendor,
# from the npm registry, so GraphiQL works on networks without internet access (a hospital's).
# The files are byte-identical to unpkg's: the page keeps its integrity hashes. Run it after a
# Strawberry upgrade changes the asset versions (the test of the page lists what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=api/http/static/vendor
urls=$(.venv/bin/python -c "import re; from api.http.graphiql import cdn_page; print('\n'.join(sorted(set(re.findall(r'https://unpkg.com/[^\"]+', cdn_page())))))")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for url in $urls; do
  path=${url#https://unpkg.com/}
  spec=$(echo "$path" | sed -E 's#^((@[^/]+/)?[^/@]+@[^/]+)/.*#\1#')
  file=${path#"$spec"/}
  pkg="$work/$(echo "$spec" | tr '/@' '__')"
  if [ ! -d "$pkg" ]; then
    mkdir -p "$pkg"
    (cd "$work" && npm pack -q "$spec" >/dev/null && tar xzf ./*.tgz -C "$pkg" && rm ./*.tgz)
  fi
  mkdir -p "$dest/$(dirname "$path")"
  cp "$pkg/package/$file" "$dest/$path"
  echo "$dest/$path"
done
