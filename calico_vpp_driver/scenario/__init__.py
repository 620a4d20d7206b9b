"""Scenario files -> the Felix message stream Felix would send for one node."""
