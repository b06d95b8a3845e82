"""Orders: a model, a view that saves an order and enqueues its confirmation on commit, the tasks."""
