"""Built-in sinks. Each module registers through the ``eventrun.sinks`` entry points."""
