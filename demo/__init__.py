"""`stackprobe demo`: an ECS Fargate stack like the runbooks' on one machine, with faults
that play their incidents. Needs the `demo` extra (moto's server)."""
