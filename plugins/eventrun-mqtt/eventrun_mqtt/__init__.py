"""eventrun-mqtt: the ``mqtt`` trigger and ``mqtt:`` destination for eventrun.

See README.md beside this package for the configuration, the event shape and the
delivery contract (QoS 1, persistent session, PUBACK only after success, in order).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
