"""Readiness: is the live fleet fit to lose a region right now? (`python -m drills readiness --env ENV`)

checks.py holds pure checks over plain data (a FleetSnapshot of the live fleet, a Declared of what the stacks
declare); view.py the FleetView protocol and its AWS implementation; command.py the CLI and the Prometheus gauges.
A rehearsal backend implements FleetView by returning a FleetSnapshot built from its world.
"""
