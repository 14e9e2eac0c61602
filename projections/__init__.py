"""Read models built from the event log (current state, metrics, audit trail), the runner
that keeps them current, and the queries that read them."""
