"""Facts shared by the Lambda handlers and the stacks (metric names, namespace)."""
