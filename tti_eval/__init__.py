"""tti-eval: how well do text-image embedding models separate *your* image classes?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tti-eval")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
