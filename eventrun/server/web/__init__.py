"""Assets of the daemon's status page (template, CSS, script), read by ``eventrun.server._web``."""
