"""stackprobe: a Prometheus exporter and synthetic prober for web stacks on AWS ECS Fargate.

The public surface for probe kinds is the probe contract (`stackprobe.contract`) and the target
config base (`stackprobe.target`); everything else is the exporter's own machinery.
"""

from stackprobe._version import __version__

__all__ = ["__version__"]
