"""Assets of the daemon's status page (template, CSS, script), read by ``eventrun._web``."""
