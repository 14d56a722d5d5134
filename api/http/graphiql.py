"""The GraphiQL page: Strawberry's, titled for this service, opening on the README's worklist
with a comment on what to try, and with a graphql-ws client for subscriptions (they are served
over the WebSocket only). Its scripts come from this server (api/http/static/vendor, byte-identical
to unpkg's, so the page's integrity hashes hold) rather than a CDN that a hospital network may
not reach; scripts/vendor-graphiql.sh copies them from `cdn_page()`."""

from __future__ import annotations

from strawberry.http.ides import get_graphql_ide_html

UNPKG = "https://unpkg.com/"
# graphql-ws's browser build, as on unpkg (npm package graphql-ws@6.4.2, umd/graphql-ws.min.js).
GRAPHQL_WS = "graphql-ws@6.4.2/umd/graphql-ws.min.js"
GRAPHQL_WS_INTEGRITY = "sha384-mxvR4Mzbsb6QVx/9xI2gtQikQA6m8zMDBFnu3l//4/ROsWt7y2sUGWd+/tYQqDm7"

WELCOME = """\
# imaging-api: FHIR R5 ImagingStudy over GraphQL. The docs pane (top left) holds each
# element's R5 definition.
#
# Run this worklist with the play button (or Ctrl-Enter). Then try, as in the README
# ("Try it in GraphiQL"):
#   { ImagingStudy(id: "example-xr") { id status series { uid instance { uid } } } }
# or watch writes as they are committed, over the WebSocket:
#   subscription { ImagingStudyChanged { action id versionId status } }
# and run the README's create mutation in another tab.
#
# With IMAGING_AUTH=jwt, put {"Authorization": "Bearer <token>"} in Headers (bottom):
# queries send it as a header, subscriptions in their connection_init.
{
  ImagingStudyList(patient: "Patient/dicom", _count: 10) {
    id status started description numberOfSeries numberOfInstances
    modality { coding { code } }
  }
}
"""

# (what Strawberry's page says, what this page says instead): each must be found, so that a
# Strawberry upgrade that changes the page fails the tests instead of quietly losing a change.
_EDITS = (
    (
        "<title>Strawberry GraphiQL</title>",
        "<title>imaging-api: FHIR R5 ImagingStudy GraphiQL</title>",
    ),
    (
        "    <script>\n      const EXAMPLE_QUERY = `",
        f'    <script\n      crossorigin\n      src="{UNPKG}{GRAPHQL_WS}"\n'
        f'      integrity="{GRAPHQL_WS_INTEGRITY}"\n    ></script>\n'
        "    <script>\n      const EXAMPLE_QUERY = `",
    ),
    # GraphiQL chooses the transport from the editor's last parsed document, which lags behind
    # typing: a subscription typed (or pasted) and run at once went over HTTP and was refused.
    # This fetcher decides from the operation it is given. A subscription's socket sends the
    # headers editor's Authorization in connection_init, where the server looks for the token.
    (
        """      const fetcher = GraphiQL.createFetcher({
        url: fetchURL,
        headers: defaultHeaders,
        subscriptionUrl,
      });""",
        """      function operationKind(query, operationName) {
        const text = query.replace(/"{3}[\\s\\S]*?"{3}|"(?:[^"\\\\\\n]|\\\\.)*"|#[^\\n\\r]*/g, " ");
        const operations = [];
        let depth = 0;
        let pending = null;
        for (const token of text.match(/[{}()\\[\\]]|[_A-Za-z][_0-9A-Za-z]*/g) || []) {
          if ("{([".includes(token)) {
            if (depth === 0 && token === "{") {
              if (pending === null) operations.push({ kind: "query", name: undefined });
              pending = null;
            }
            depth += 1;
          } else if ("})]".includes(token)) {
            depth -= 1;
          } else if (depth === 0 && pending !== null && pending.name === undefined) {
            pending.name = token;
          } else if (depth === 0 && ["query", "mutation", "subscription", "fragment"]
                     .includes(token)) {
            pending = { kind: token, name: undefined };
            operations.push(pending);
          }
        }
        const chosen = operations.filter((o) => o.kind !== "fragment")
          .find((o) => !operationName || o.name === operationName);
        return chosen ? chosen.kind : "query";
      }

      const wsClients = {};
      function wsClientFor(headers) {
        const name = Object.keys(headers || {}).find((k) => k.toLowerCase() === "authorization");
        const authorization = name ? String(headers[name]) : "";
        if (!wsClients[authorization]) {
          wsClients[authorization] = graphqlWs.createClient({
            url: subscriptionUrl,
            connectionParams: authorization ? { Authorization: authorization } : {},
            // 4403 (no, a bad or an expired token) is not retried: the same headers would
            // be refused again, and the page would hang on "Stop query" meanwhile.
            shouldRetry: (closed) => !(closed && closed.code === 4403),
          });
        }
        return wsClients[authorization];
      }

      // A closed socket is thrown as a CloseEvent: shown as its code and reason instead.
      async function* subscribed(results) {
        try {
          yield* results;
        } catch (error) {
          if (error && typeof error.code === "number" && "reason" in error) {
            throw new Error(`the server closed the WebSocket (${error.code}): ${error.reason}`);
          }
          throw error;
        }
      }

      const httpFetcher = GraphiQL.createFetcher({ url: fetchURL, headers: defaultHeaders });

      function fetcher(params, options) {
        if (operationKind(params.query, params.operationName) === "subscription") {
          return subscribed(wsClientFor(options && options.headers).iterate(params));
        }
        return httpFetcher(params, options);
      }""",
    ),
)


def cdn_page() -> str:
    """The page with its scripts on unpkg, as Strawberry writes it, plus this service's
    changes."""
    page = get_graphql_ide_html("graphiql")
    start, end = (
        page.index("const EXAMPLE_QUERY = `") + 23,
        page.index("`;", page.index("const EXAMPLE_QUERY = `")),
    )
    page = page[:start] + WELCOME + page[end:]
    for old, new in _EDITS:
        if old not in page:
            raise RuntimeError(f"Strawberry's GraphiQL page changed: {old[:60]!r} is gone")
        page = page.replace(old, new)
    return page


def page() -> str:
    """The page as served: its scripts from /static/vendor."""
    return cdn_page().replace(UNPKG, "/static/vendor/")
