"""Scripts a real model server's own Python runs (not imported by the project's code)."""
