"""myapp's settings: all of them come from ``HOOKLINE_*`` environment variables."""

from hookline.config import Settings

SETTINGS = Settings.from_env()
