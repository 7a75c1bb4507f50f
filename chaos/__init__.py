"""The chaos suite: faults injected into a working consumer group, figures reported."""
