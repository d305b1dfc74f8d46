"""Test-only extensions: a backbone family and a channel file format, each one module that touches no
library file (tests/test_registries.py registers and uses them)."""
