"""The HTTP service: the Starlette app and its lifespan, middleware, GraphQL over HTTP and
WebSocket, health and metrics, logs, and the GraphiQL page with its static scripts."""
