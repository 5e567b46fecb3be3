"""What rigd runs once its devices are found (agent/runtime/parts.py lists the parts)."""
