"""What ships beside the exporter but never runs inside it: the runbook-link tooling."""
