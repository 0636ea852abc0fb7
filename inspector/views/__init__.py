"""Views render an :class:`~inspector.model.Inspection`; none touches flax."""
