"""The floor every other package stands on: errors, atomic writes and ownership of half-written
files, locks, HTTP downloads and the weights cache, the process pool and shared-memory arrays,
the common run options, image reading and writing (channel files, multi-channel stacks, image
folders), the 19 classes, and picture overlays. Nothing here imports from above it."""

__version__ = "0.1.0"
"""The package's version (``hpasc.__version__``; the floor holds it so that manifests need nothing above)."""
