"""Chat commands: declared as data, parsed and permission-checked in one place."""
