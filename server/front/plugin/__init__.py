"""front/plugin."""
