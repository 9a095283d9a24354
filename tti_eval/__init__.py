"""tti-eval: how well do text-image embedding models separate *your* image classes?"""


def __getattr__(name: str) -> str:
    # Read from the package metadata on first use: importlib.metadata costs tens of milliseconds of every start-up.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tti-eval")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"
