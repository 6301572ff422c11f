"""The sftprep version, recorded in every manifest and part of every build fingerprint."""

__version__ = "0.1.0"


def installed(distribution: str) -> str | None:
    """The installed version of a distribution (fastokens, minijinja), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None
