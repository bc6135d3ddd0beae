"""The package version, in a leaf module every layer may import (the package root imports the whole API)."""

__version__ = "0.1.0"
