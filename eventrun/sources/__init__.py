"""Built-in sources. Each module registers through the ``eventrun.sources`` entry points."""
