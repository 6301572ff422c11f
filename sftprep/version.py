"""The sftprep version, recorded in every manifest and part of every build fingerprint."""

__version__ = "0.1.0"
