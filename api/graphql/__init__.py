"""The GraphQL schema and engine: types, inputs, resolvers, query limits, compiled execution.
Resolvers reach the store only through the caller-scoped store of api/access."""
