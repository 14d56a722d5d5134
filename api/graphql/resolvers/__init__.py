"""The resolvers of the three root types: Query, Mutation and Subscription."""
