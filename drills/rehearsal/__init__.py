"""The rehearsal backend ("the world"): the system's AWS side and data plane, running on one machine."""
